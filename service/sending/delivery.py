"""Delivery updates from the provider: move a message's status forward, never back.

Twilio posts each status change, retries on timeouts and does not promise order, so a late "sent" may
arrive after "delivered": ``lifecycle.record_delivery`` only ever raises a row's rank. A failure that
means the address can never be reached takes the one failure path (``service.sending.failure``).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from service.channels.base import DeliveryUpdate
from service.models import ScheduledMessage, id_of
from service.outbox import lifecycle
from service.outbox.purpose import Purposes, purpose_of
from service.sending.failure import after_failure


def apply_update(session: Session, update: DeliveryUpdate, *, now: datetime, purposes: Purposes) -> str:
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
        id_of(row),
        now=now,
        to_state=update.status,
        provider_id=update.provider_id,
        sent_at=row.sent_at or now,
        error=update.detail,
        code=update.code,
    )
    if not moved:
        return "stale"  # late or repeated: never move backwards
    if update.problem is not None:
        # The address can never be reached: the same failure path as a refusal at send time.
        after_failure(
            session, row, purpose_of(purposes, row), problem=update.problem, code=update.code,
            actor="provider", now=now,
        )  # fmt: skip
    return update.status.value
