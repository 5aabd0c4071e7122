"""Beat's dispatcher: claim due outbox rows and escalation steps, sweep stuck ones, then queue one task per
row and step after commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from celery import shared_task

from service.celery import (
    DISPATCH_DUE,
    PROCESS_INBOUND,
    RECONCILE_MESSAGE,
    RUN_ESCALATION_STEP,
    SEND_MESSAGE,
    SEND_MESSAGES,
    enqueue_after_commit,
)
from service.db import session_scope
from service.monitoring import heartbeat
from service.outbox.dispatch import dispatch
from service.paging import lifecycle as paging
from service.replies import pipeline
from service.settings import get_settings
from tasks.safety import without_details

# Below this many due rows each goes in a task of its own: the first messages of a burst, and every
# message outside one, start at once on as many threads as there are.
BATCH_WHEN_MORE_THAN = 64


def sending_batches(due: list[int], *, per_task: int) -> list[list[int]]:
    """The due rows in groups of ``per_task`` when there are many: a burst of thousands costs a quarter
    of the broker round trips and task overhead, while every thread still has work."""
    if len(due) <= BATCH_WHEN_MORE_THAN or per_task <= 1:
        return [[message_id] for message_id in due]
    return [due[start : start + per_task] for start in range(0, len(due), per_task)]


@shared_task(name=DISPATCH_DUE, ignore_result=True)
@without_details()
def dispatch_due() -> dict[str, int]:
    settings = get_settings()
    now = datetime.now(UTC)
    with session_scope() as session:
        run = dispatch(session, now=now, settings=settings)
        lost_steps = paging.requeue_lost_steps(
            session, now=now, older_than=timedelta(seconds=settings.STEP_STALE_SECONDS)
        )
        due_steps = paging.claim_due_steps(session, now=now, limit=settings.DISPATCH_BATCH_SIZE)
        # Inbound messages whose processing task was lost: the inbound worker takes them again.
        lost_inbound = pipeline.stale(
            session, now=now, older_than=timedelta(seconds=settings.INBOUND_STALE_SECONDS)
        )
        for message_id in lost_inbound:
            enqueue_after_commit(session, PROCESS_INBOUND, message_id)
        for batch in sending_batches(run.due, per_task=settings.SENDS_PER_TASK):
            if len(batch) == 1:
                enqueue_after_commit(session, SEND_MESSAGE, batch[0])
            else:
                enqueue_after_commit(session, SEND_MESSAGES, batch)
        for message_id in run.to_reconcile:
            enqueue_after_commit(session, RECONCILE_MESSAGE, message_id)
        for step_id in due_steps:
            enqueue_after_commit(session, RUN_ESCALATION_STEP, step_id)
    # For the watchdog (beat and a worker live), in a transaction of its own: every pass writes this one
    # row, and a pass cut off mid-way (its host unplugged) must not hold it locked for the others.
    with session_scope() as session:
        heartbeat.beat(session, heartbeat.DISPATCHER, now=now)
    return {
        "due": len(run.due),
        "reconcile": len(run.to_reconcile),
        "requeued": run.requeued,
        "stuck": run.stuck,
        "steps": len(due_steps),
        "lost_steps": lost_steps,
        "lost_inbound": len(lost_inbound),
    }
