"""Send one due outbox row: re-check it may still go, render it, hand it to its channel, record the outcome.

The checks run at send time, not at booking time, because that is when they are true: a booking may have
been cancelled, a patient may have texted STOP, and 07:55 in the patient's timezone is still night.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy import func, select
from sqlmodel import Session

from service import audit, outbox
from service.channels.base import Channel, DeliveryError, OutgoingMessage
from service.contact import display_phone, format_local, treatment_label, unsubscribe_url
from service.core.quiet_hours import next_allowed, parse_window
from service.fallback import UNREACHABLE_CODES, add_fallback, apply_permanent_failure
from service.models import (
    Booking,
    BookingStatus,
    Clinic,
    MessageStatus,
    Patient,
    ScheduledMessage,
)
from service.rendering import render
from service.settings import Settings

log = logging.getLogger(__name__)
S = MessageStatus

# Rows that count as "an SMS reached (or may have reached) this patient": the first SMS carries STOP
# instructions, later ones do not.
SMS_GONE = (S.SENDING, S.UNKNOWN, S.SENT, S.DELIVERED, S.UNDELIVERED)


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
    channels: Mapping[str, Channel],
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
        if outbox.transition(
            session, row.id, from_states=[S.QUEUED], to_state=S.SUPPRESSED, now=now, last_error=reason
        ):
            audit.record(
                session, clinic.id, "worker", "message.suppressed", f"message:{row.id}", now, reason=reason
            )
            if row.channel == "sms" and patient.sms_unreachable_reason:
                add_fallback(session, row, patient, now=now)
        session.commit()
        return Outcome.SUPPRESSED

    if row.channel == "sms" and row.kind != "reply":
        start, end = parse_window(f"{clinic.quiet_start}-{clinic.quiet_end}")
        allowed = next_allowed(now, timezone=patient.timezone, start=start, end=end)
        if allowed > now:
            outbox.transition(
                session, row.id, from_states=[S.QUEUED], to_state=S.SCHEDULED, now=now, send_at=allowed
            )
            session.commit()
            return Outcome.DEFERRED

    outgoing = _render(session, row, booking, patient, clinic, settings)
    # Committed before the provider call: if this process dies inside the call, the row is found in
    # *sending* and settled with the provider, never sent again blind.
    if not outbox.transition(
        session,
        row.id,
        from_states=[S.QUEUED],
        to_state=S.SENDING,
        now=now,
        sending_at=now,
        attempts=row.attempts + 1,
        body=outgoing.body,
    ):
        session.rollback()
        return Outcome.NOT_QUEUED
    session.commit()
    attempts = row.attempts + 1

    try:
        receipt = channels[row.channel].send(outgoing)
    except DeliveryError as error:
        return _record_failure(session, row, patient, error, attempts=attempts, now=now, settings=settings)
    _leave_sending(
        session,
        row,
        S.SENT,
        now,
        provider_id=receipt.provider_id,
        sent_at=now,
        last_error=None,
        error_code=None,
    )
    session.commit()
    log.info("message %s sent by %s", row.id, row.channel)
    return Outcome.SENT


def _suppression_reason(row: ScheduledMessage, booking: Booking, patient: Patient) -> str | None:
    address = patient.phone if row.channel == "sms" else patient.email
    if not address:
        return f"the patient has no {'phone number' if row.channel == 'sms' else 'email address'}"
    if row.kind == "reply":
        # Our answer to a message the patient just sent goes even if they opted out of reminders or the
        # booking was cancelled (DESIGN.md §9): they wrote to us.
        return None
    if booking.status == BookingStatus.CANCELLED:
        return "the booking was cancelled"
    if row.channel == "sms":
        if patient.sms_opted_out_at is not None:
            return "the patient opted out of SMS"
        if patient.sms_unreachable_reason:
            return f"SMS cannot reach this patient: {patient.sms_unreachable_reason}"
    if row.channel == "email" and patient.email_opted_out_at is not None:
        return "the patient unsubscribed from email"
    return None


def _render(
    session: Session,
    row: ScheduledMessage,
    booking: Booking,
    patient: Patient,
    clinic: Clinic,
    settings: Settings,
) -> OutgoingMessage:
    include_stop_notice = False
    if row.channel == "sms":
        earlier = session.scalar(
            select(func.count())
            .select_from(ScheduledMessage)
            .where(
                ScheduledMessage.patient_id == patient.id,
                ScheduledMessage.channel == "sms",
                ScheduledMessage.status.in_(SMS_GONE),  # type: ignore[attr-defined]
                ScheduledMessage.id != row.id,
            )
        )
        include_stop_notice = not earlier
    link = unsubscribe_url(patient.id, settings)
    context = {
        "first_name": patient.first_name,
        "clinic_name": clinic.name,
        "clinic_phone": display_phone(clinic.sms_from),
        "emergency_number": clinic.emergency_number,
        "treatment": booking.treatment,
        "treatment_label": treatment_label(booking, patient.language),
        "include_stop_notice": include_stop_notice,
        "unsubscribe_url": link,
        "step": row.step,
        "starts_at_local": format_local(booking.starts_at, patient.timezone, patient.language),
        **row.context,
    }
    rendered = render(row.template, row.channel, patient.language, context)
    if row.channel == "sms":
        return OutgoingMessage(
            outbox_id=row.id,
            channel="sms",
            to=patient.phone or "",
            sender=clinic.sms_from,
            body=rendered.body,
            status_callback=f"{settings.PUBLIC_BASE_URL.rstrip('/')}/webhooks/twilio/status?message_id={row.id}",
        )
    return OutgoingMessage(
        outbox_id=row.id,
        channel="email",
        to=patient.email or "",
        sender=clinic.email_from or settings.EMAIL_FROM,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        headers={"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )


def _leave_sending(
    session: Session, row: ScheduledMessage, to_state: str, now: datetime, **values: Any
) -> bool:
    """The provider call is over: move the row on from *sending* (and only from there)."""
    return outbox.transition(session, row.id, from_states=[S.SENDING], to_state=to_state, now=now, **values)  # type: ignore[arg-type]


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
    if error.outcome_unknown:
        _leave_sending(session, row, S.UNKNOWN, now, last_error=detail, error_code=error.code)
        session.commit()
        log.warning("message %s: outcome unknown (%s); will settle with the provider", row.id, error.code)
        return Outcome.UNKNOWN
    if not error.permanent and attempts < settings.MAX_SEND_ATTEMPTS:
        delay = get_exponential_backoff_interval(
            factor=int(settings.RETRY_BACKOFF_BASE_SECONDS) or 1,
            retries=attempts - 1,
            maximum=int(settings.RETRY_BACKOFF_MAX_SECONDS),
            full_jitter=False,
        )
        send_at = now + timedelta(seconds=delay)
        _leave_sending(
            session, row, S.SCHEDULED, now, send_at=send_at, last_error=detail, error_code=error.code
        )
        session.commit()
        log.warning("message %s: transient failure (%s), retry in %ss", row.id, error.code, delay)
        return Outcome.RETRY
    if not error.permanent:
        detail = f"gave up after {attempts} attempts: {detail}"
    elif error.code in UNREACHABLE_CODES:
        # The channel's message already says what is wrong; add where staff put it right.
        detail = f"{detail}; correct it with PATCH /api/v1/patients/{patient.id}"
    if _leave_sending(session, row, S.FAILED, now, last_error=detail, error_code=error.code):
        apply_permanent_failure(session, row, patient, code=error.code, now=now)
        add_fallback(session, row, patient, now=now)
        audit.record(
            session,
            row.clinic_id,
            "worker",
            "message.failed",
            f"message:{row.id}",
            now,
            code=error.code,
            channel=row.channel,
        )
    session.commit()
    log.warning("message %s failed permanently (%s)", row.id, error.code)
    return Outcome.FAILED
