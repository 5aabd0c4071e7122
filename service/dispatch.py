"""The dispatcher's use cases: claim due rows, keep stuck rows moving, and settle unknown outcomes.

Beat runs ``dispatch`` every few seconds. Messages wait in the database, never in the broker, so a
restarted or flushed Redis loses nothing: a claimed row whose task vanished is handed back by the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session

from service import outbox
from service.channels.base import Channel, DeliveryError, OutgoingMessage
from service.models import Clinic, MessageStatus, Patient, ScheduledMessage
from service.settings import Settings

log = logging.getLogger(__name__)
S = MessageStatus


@dataclass
class DispatchRun:
    due: list[int] = field(default_factory=list)  # claimed: one send task each
    to_reconcile: list[int] = field(default_factory=list)  # unknown: one look-up each
    requeued: int = 0
    stuck: int = 0


def dispatch(session: Session, *, now: datetime, settings: Settings) -> DispatchRun:
    """One dispatcher pass. The caller commits, then enqueues the tasks."""
    run = DispatchRun()
    run.requeued = outbox.requeue_lost(
        session, now=now, older_than=timedelta(seconds=settings.QUEUED_STALE_SECONDS)
    )
    run.stuck = outbox.mark_stuck_unknown(
        session, now=now, older_than=timedelta(seconds=settings.SENDING_STALE_SECONDS)
    )
    run.due = outbox.claim_due(session, now=now, limit=settings.DISPATCH_BATCH_SIZE)
    run.to_reconcile = outbox.claim_unknown_for_reconcile(
        session,
        now=now,
        grace=timedelta(seconds=settings.UNKNOWN_GRACE_SECONDS),
        limit=settings.DISPATCH_BATCH_SIZE,
    )
    if run.requeued or run.stuck:
        log.warning("dispatcher handed back %s lost and marked %s stuck rows", run.requeued, run.stuck)
    return run


def reconcile(session: Session, message_id: int, *, now: datetime, channels: Mapping[str, Channel]) -> str:
    """Settle a row whose send may or may not have reached the provider, by asking the provider.

    Found → sent. Certainly not there → scheduled again, to be sent now. Cannot tell → stays unknown and is
    asked again after the grace period. Never a blind resend of an SMS.
    """
    row = session.get(ScheduledMessage, message_id, populate_existing=True)
    if row is None or row.status != S.UNKNOWN:
        return "not_unknown"
    patient = session.get(Patient, row.patient_id, populate_existing=True)
    clinic = session.get(Clinic, row.clinic_id)
    assert patient and clinic
    sms = row.channel == "sms"
    probe = OutgoingMessage(
        outbox_id=row.id,  # type: ignore[arg-type]
        channel=row.channel,
        to=(patient.phone if sms else patient.email) or "",
        sender=clinic.sms_from if sms else clinic.email_from,
        body=row.body or "",
    )
    since = (row.sending_at or row.updated_at) - timedelta(minutes=5)
    try:
        receipt = channels[row.channel].lookup(probe, since=since)
    except DeliveryError as error:
        log.warning("message %s: provider could not tell (%s); will ask again", row.id, error)
        return "still_unknown"
    if receipt is not None:
        outbox.transition(
            session,
            row.id,
            from_states=[S.UNKNOWN],
            to_state=S.SENT,
            now=now,  # type: ignore[arg-type]
            provider_id=receipt.provider_id,
            sent_at=row.sending_at or now,
        )
        session.commit()
        return "sent"
    # The provider has no such message: it never left, so sending it now sends it once.
    outbox.transition(
        session,
        row.id,
        from_states=[S.UNKNOWN],
        to_state=S.SCHEDULED,
        now=now,  # type: ignore[arg-type]
        send_at=now,
        last_error=f"not found at the provider after an unsure send: {row.last_error}",
    )
    session.commit()
    return "rescheduled"
