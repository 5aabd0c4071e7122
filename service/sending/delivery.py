"""Delivery updates from the provider: move a message's status forward, never back.

Twilio posts each status change, retries on timeouts and does not promise order, so a late "sent" may
arrive after "delivered": ``lifecycle.record_delivery`` only ever raises a row's rank. A failure that
means the address can never be reached marks the patient and sends the step on the other channel.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from service import audit
from service.celery import PAGE_FAILED, enqueue_after_commit
from service.channels.base import DeliveryUpdate
from service.core.enums import MessageKind
from service.models import Patient, ScheduledMessage
from service.outbox import lifecycle
from service.sending.fallback import fall_back


def apply_update(session: Session, update: DeliveryUpdate, *, now: datetime) -> str:
    """Apply one update. Returns what happened, for the log; updates for messages we do not know are
    answered 200 too (the provider would otherwise retry something we can never use)."""
    row = (
        session.get(ScheduledMessage, update.message_id, populate_existing=True)
        if update.message_id
        else None
    )
    if row is None or (row.provider_id and row.provider_id != update.provider_id):
        return "unknown_message"
    if update.status is None:
        return "ignored_status"
    moved = lifecycle.record_delivery(
        session,
        row.id,  # type: ignore[arg-type]
        now=now,
        to_state=update.status,
        provider_id=update.provider_id,
        sent_at=row.sent_at or now,
        error=update.detail,
        code=update.code,
    )
    if not moved:
        return "stale"  # late or repeated: never move backwards
    if update.problem is not None and row.kind == MessageKind.PAGE:
        enqueue_after_commit(session, PAGE_FAILED, row.id)  # the staff member cannot be reached: next level
    elif update.problem is not None and row.patient_id is not None:
        patient = session.get(Patient, row.patient_id, populate_existing=True)
        assert patient is not None
        fall_back(session, row, patient, problem=update.problem, now=now)
        audit.record(
            session, row.clinic_id, "provider", "message.undelivered", f"message:{row.id}", now,
            problem=update.problem.value,
        )  # fmt: skip
    return update.status.value
