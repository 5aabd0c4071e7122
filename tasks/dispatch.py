"""Beat's dispatcher: claim due rows, sweep stuck ones, then queue one task per row after commit."""

from __future__ import annotations

from datetime import UTC, datetime

from celery import shared_task

from service.celery import DISPATCH_DUE, RECONCILE_MESSAGE, SEND_MESSAGE, enqueue_after_commit
from service.db import session_scope
from service.outbox.dispatch import dispatch
from service.settings import get_settings


@shared_task(name=DISPATCH_DUE, ignore_result=True)
def dispatch_due() -> dict[str, int]:
    with session_scope() as session:
        run = dispatch(session, now=datetime.now(UTC), settings=get_settings())
        for message_id in run.due:
            enqueue_after_commit(session, SEND_MESSAGE, message_id)
        for message_id in run.to_reconcile:
            enqueue_after_commit(session, RECONCILE_MESSAGE, message_id)
    return {
        "due": len(run.due),
        "reconcile": len(run.to_reconcile),
        "requeued": run.requeued,
        "stuck": run.stuck,
    }
