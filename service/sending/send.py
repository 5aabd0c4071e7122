"""Send one due outbox row: re-check it may still go, render it, hand it to its channel, record the outcome.

The checks run at send time, not at booking time, because that is when they are true: a booking may have
been cancelled, a patient may have texted STOP, and 07:55 in the patient's timezone is still night.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select
from sqlmodel import Session

from service import audit
from service.channels.base import Channel, DeliveryError, OutgoingMessage
from service.core.enums import BookingStatus, MessageKind, MessageStatus, RecipientProblem
from service.core.enums import Channel as ChannelName
from service.core.phones import display_phone
from service.core.plans import CarePlan
from service.core.quiet_hours import QuietHours
from service.core.timezones import describe_local, format_local
from service.models import Booking, Clinic, Patient, ScheduledMessage
from service.outbox import lifecycle
from service.patients.links import unsubscribe_url
from service.patients.reach import contact_problem, missing_address
from service.rendering import render
from service.sending.fallback import fall_back
from service.sending.retry import retry_at
from service.settings import Settings

log = logging.getLogger(__name__)
S = MessageStatus


class Outcome(StrEnum):
    NOT_QUEUED = "not_queued"  # a duplicate or stale task: the row is not ours to send
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"  # quiet hours
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    UNKNOWN = "unknown"


def send_due_message(
    session: Session,
    message_id: int,
    *,
    now: datetime,
    channels: Mapping[ChannelName, Channel],
    settings: Settings,
) -> Outcome:
    row = session.get(ScheduledMessage, message_id, populate_existing=True)
    if row is None or row.status != S.QUEUED:
        return Outcome.NOT_QUEUED
    booking = session.get(Booking, row.booking_id, populate_existing=True)
    patient = session.get(Patient, row.patient_id, populate_existing=True)
    clinic = session.get(Clinic, row.clinic_id)
    assert booking and patient and clinic  # foreign keys

    reason = _suppression_reason(row, booking, patient)
    if reason:
        return _suppress(session, row, patient, reason, now=now)

    if row.channel == ChannelName.SMS and row.kind == MessageKind.CARE:
        allowed = QuietHours.of(clinic.quiet_start, clinic.quiet_end).next_allowed(now, patient.timezone)
        if allowed > now:
            if lifecycle.defer(session, row.id, now=now, until=allowed):  # type: ignore[arg-type]
                session.commit()
                log.info("message %s deferred to %s", row.id, describe_local(allowed, patient.timezone))
                return Outcome.DEFERRED
            session.rollback()
            return Outcome.NOT_QUEUED

    outgoing = _render(session, row, booking, patient, clinic, settings)
    attempts = row.attempts + 1
    # Committed before the provider call: if this process dies inside the call, the row is found in
    # *sending* and settled with the provider, never sent again blind. The same UPDATE re-checks the
    # booking and the patient's opt-out, so a cancel or a STOP committed a moment ago wins.
    if not lifecycle.start_sending(session, row.id, now=now, attempts=attempts, body=outgoing.body):  # type: ignore[arg-type]
        session.rollback()
        session.refresh(row)
        session.refresh(booking)
        session.refresh(patient)
        late_reason = row.status == S.QUEUED and _suppression_reason(row, booking, patient)
        if late_reason:
            return _suppress(session, row, patient, late_reason, now=now)
        return Outcome.NOT_QUEUED
    session.commit()

    try:
        receipt = channels[ChannelName(row.channel)].send(outgoing)
    except DeliveryError as error:
        return _record_failure(session, row, patient, error, attempts=attempts, now=now, settings=settings)
    if not lifecycle.mark_sent(session, row.id, now=now, provider_id=receipt.provider_id):  # type: ignore[arg-type]
        # A status callback settled the row first (it carries the same provider id): nothing to add.
        log.info("message %s was already settled by its status callback", row.id)
    session.commit()
    log.info("message %s sent by %s", row.id, row.channel)
    return Outcome.SENT


def _suppress(
    session: Session, row: ScheduledMessage, patient: Patient, reason: str, *, now: datetime
) -> Outcome:
    if lifecycle.suppress(session, row.id, now=now, reason=reason):  # type: ignore[arg-type]
        audit.record(
            session, row.clinic_id, "worker", "message.suppressed", f"message:{row.id}", now, reason=reason
        )
        if row.channel == ChannelName.SMS and patient.sms_unreachable_reason:
            fall_back(session, row, patient, problem=None, now=now)
        session.commit()
        return Outcome.SUPPRESSED
    session.rollback()
    return Outcome.NOT_QUEUED


def _suppression_reason(row: ScheduledMessage, booking: Booking, patient: Patient) -> str | None:
    if row.kind == MessageKind.REPLY:
        # Our answer to a message the patient just sent goes even if they opted out of reminders or the
        # booking was cancelled: they wrote to us (docs/architecture.md#invariants).
        return missing_address(patient, row.channel)
    if booking.status == BookingStatus.CANCELLED:
        return "the booking was cancelled"
    return contact_problem(patient, row.channel)


def _render(
    session: Session,
    row: ScheduledMessage,
    booking: Booking,
    patient: Patient,
    clinic: Clinic,
    settings: Settings,
) -> OutgoingMessage:
    include_stop_notice = False
    if row.channel == ChannelName.SMS:
        earlier = session.scalar(
            select(func.count())
            .select_from(ScheduledMessage)
            .where(
                ScheduledMessage.patient_id == patient.id,
                ScheduledMessage.channel == ChannelName.SMS,
                ScheduledMessage.status.in_(sorted(lifecycle.GONE)),  # type: ignore[union-attr]
                ScheduledMessage.id != row.id,
            )
        )
        include_stop_notice = not earlier
    link = unsubscribe_url(patient.id, settings)  # type: ignore[arg-type]
    context = {
        "first_name": patient.first_name,
        "clinic_name": clinic.name,
        "clinic_phone": display_phone(clinic.sms_from),
        "emergency_number": clinic.emergency_number,
        "treatment": booking.treatment,
        "treatment_label": CarePlan.from_snapshot(booking.plan_snapshot).label(patient.language),
        "include_stop_notice": include_stop_notice,
        "unsubscribe_url": link,
        "step": row.step,
        "starts_at_local": format_local(booking.starts_at, patient.timezone, patient.language),
        **row.context,
    }
    rendered = render(row.template, row.channel, patient.language, context)
    if row.channel == ChannelName.SMS:
        return OutgoingMessage(
            outbox_id=row.id,  # type: ignore[arg-type]
            channel=ChannelName.SMS,
            to=patient.phone or "",
            sender=clinic.sms_from,
            body=rendered.body,
            status_callback=f"{settings.PUBLIC_BASE_URL.rstrip('/')}/webhooks/twilio/status?message_id={row.id}",
        )
    return OutgoingMessage(
        outbox_id=row.id,  # type: ignore[arg-type]
        channel=ChannelName.EMAIL,
        to=patient.email or "",
        sender=clinic.email_from or settings.EMAIL_FROM,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        headers={"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )


def _record_failure(
    session: Session,
    row: ScheduledMessage,
    patient: Patient,
    error: DeliveryError,
    *,
    attempts: int,
    now: datetime,
    settings: Settings,
) -> Outcome:
    detail = str(error)[:500]
    message_id: int = row.id  # type: ignore[assignment]
    if error.outcome_unknown:
        if lifecycle.mark_unknown(session, message_id, now=now, error=detail, code=error.code):
            log.warning("message %s: outcome unknown; will settle with the provider", message_id)
        session.commit()
        return Outcome.UNKNOWN
    again = None if error.permanent else retry_at(attempts, now=now, settings=settings)
    if again is not None:
        if lifecycle.retry_later(session, message_id, now=now, at=again, error=detail, code=error.code):
            log.warning("message %s: transient failure, retry at %s", message_id, again.isoformat())
        session.commit()
        return Outcome.RETRY
    if not error.permanent:
        detail = f"gave up after {attempts} attempts: {detail}"
    elif error.problem not in (None, RecipientProblem.OPTED_OUT) and row.channel == ChannelName.SMS:
        # The channel's message already says what is wrong; add where staff put it right.
        detail = f"{detail}; correct it with PATCH /api/v1/patients/{patient.id}"
    if lifecycle.fail(session, message_id, now=now, error=detail, code=error.code):
        fall_back(session, row, patient, problem=error.problem, now=now)
        audit.record(
            session, row.clinic_id, "worker", "message.failed", f"message:{message_id}", now,
            code=error.code, channel=row.channel,
        )  # fmt: skip
    session.commit()
    log.warning("message %s failed permanently", message_id)
    return Outcome.FAILED
