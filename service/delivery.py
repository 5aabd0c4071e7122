"""Delivery status callbacks: move a message's status forward, never back.

Twilio posts each status change, retries on timeouts and does not promise order, so a late "sent" may
arrive after "delivered". Each status has a rank; a callback that would lower the rank is ignored.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from service import audit, outbox
from service.fallback import OPTED_OUT_CODES, UNREACHABLE_CODES, add_fallback, apply_permanent_failure
from service.models import MessageStatus, Patient, ScheduledMessage

S = MessageStatus

# Twilio's message statuses → ours. "queued/accepted/sending" at Twilio all mean it has the message.
PROVIDER_STATUS = {
    "accepted": S.SENT,
    "scheduled": S.SENT,
    "queued": S.SENT,
    "sending": S.SENT,
    "sent": S.SENT,
    "delivered": S.DELIVERED,
    "read": S.DELIVERED,
    "undelivered": S.UNDELIVERED,
    "failed": S.FAILED,
    "canceled": S.FAILED,
}
RANK = {
    S.SCHEDULED: 0,
    S.QUEUED: 0,
    S.SENDING: 1,
    S.UNKNOWN: 1,
    S.SENT: 2,
    S.DELIVERED: 3,
    S.UNDELIVERED: 3,
    S.FAILED: 3,
}
# Codes on an undelivered/failed callback that mean SMS will never reach this number.
PERMANENT_CALLBACK_CODES = set(UNREACHABLE_CODES) | OPTED_OUT_CODES


def apply_status(
    session: Session,
    *,
    message_id: int | None,
    provider_id: str,
    provider_status: str,
    error_code: str | None,
    now: datetime,
) -> str:
    """Apply one callback. Returns what happened, for the log; unknown messages are answered 200 too
    (Twilio would otherwise retry a callback we can never use)."""
    row = session.get(ScheduledMessage, message_id, populate_existing=True) if message_id else None
    if row is None or (row.provider_id and row.provider_id != provider_id):
        return "unknown_message"
    new = PROVIDER_STATUS.get(provider_status.lower())
    if new is None:
        return "ignored_status"
    if RANK.get(S(row.status), 99) >= RANK[new]:
        return "stale"  # late or repeated: never move backwards
    values: dict[str, object] = {"provider_id": provider_id}
    if row.sent_at is None:
        values["sent_at"] = now
    if new == S.DELIVERED:
        values["delivered_at"] = now
    if new in (S.UNDELIVERED, S.FAILED):
        values["error_code"] = error_code
        values["last_error"] = f"the carrier reported {provider_status} (code {error_code or 'none'})"
    if not outbox.transition(session, row.id, from_states=[row.status], to_state=new, now=now, **values):  # type: ignore[arg-type]
        return "raced"
    if new in (S.UNDELIVERED, S.FAILED) and error_code in PERMANENT_CALLBACK_CODES:
        patient = session.get(Patient, row.patient_id, populate_existing=True)
        assert patient is not None
        apply_permanent_failure(session, row, patient, code=error_code, now=now)
        add_fallback(session, row, patient, now=now)
        audit.record(
            session, row.clinic_id, "twilio", "message.undelivered", f"message:{row.id}", now, code=error_code
        )
    return new.value
