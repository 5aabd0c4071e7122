"""Beat's dispatcher: claim due outbox rows and escalation steps, sweep stuck ones, then queue one task per
row and step after commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from celery import shared_task

from service.celery import (
    DISPATCH_DUE,
    RECONCILE_MESSAGE,
    RUN_ESCALATION_STEP,
    SEND_MESSAGE,
    enqueue_after_commit,
)
from service.db import session_scope
from service.monitoring import heartbeat
from service.outbox.dispatch import dispatch
from service.paging import steps
from service.settings import get_settings
from tasks.safety import without_details


@shared_task(name=DISPATCH_DUE, ignore_result=True)
@without_details()
def dispatch_due() -> dict[str, int]:
    settings = get_settings()
    now = datetime.now(UTC)
    with session_scope() as session:
        run = dispatch(session, now=now, settings=settings)
        heartbeat.beat(session, heartbeat.DISPATCHER, now=now)  # for the watchdog: beat and a worker live
        lost_steps = steps.requeue_lost(
            session, now=now, older_than=timedelta(seconds=settings.STEP_STALE_SECONDS)
        )
        due_steps = steps.claim_due(session, now=now, limit=settings.DISPATCH_BATCH_SIZE)
        for message_id in run.due:
            enqueue_after_commit(session, SEND_MESSAGE, message_id)
        for message_id in run.to_reconcile:
            enqueue_after_commit(session, RECONCILE_MESSAGE, message_id)
        for step_id in due_steps:
            enqueue_after_commit(session, RUN_ESCALATION_STEP, step_id)
    return {
        "due": len(run.due),
        "reconcile": len(run.to_reconcile),
        "requeued": run.requeued,
        "stuck": run.stuck,
        "steps": len(due_steps),
        "lost_steps": lost_steps,
    }
