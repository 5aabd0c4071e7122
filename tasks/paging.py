"""Run one escalation step, and move on to the next level when a page failed for good. Both are
idempotent: a step runs only while it is its escalation's active step and still pending or claimed."""

from __future__ import annotations

from datetime import UTC, datetime

from celery import shared_task

from service.celery import PAGE_FAILED, RUN_ESCALATION_STEP
from service.db import session_scope
from service.paging import steps
from tasks.safety import without_details


@shared_task(name=RUN_ESCALATION_STEP, ignore_result=True)
@without_details()
def run_escalation_step(step_id: int) -> str:
    with session_scope() as session:
        return steps.run_step(session, step_id, now=datetime.now(UTC))


@shared_task(name=PAGE_FAILED, ignore_result=True)
@without_details()
def page_failed(page_id: int) -> str:
    with session_scope() as session:
        return steps.page_failed(session, page_id, now=datetime.now(UTC))
