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

from jinja2 import TemplateError
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session

from service import audit
from service.celery import PAGE_FAILED, enqueue_after_commit
from service.channels.base import Channel, DeliveryError, OutgoingMessage
from service.core.enums import BookingStatus, MessageKind, MessageStatus, RecipientProblem, SendFailure
from service.core.enums import Channel as ChannelName
from service.core.phones import display_phone, emergency_number_for
from service.core.plans import CarePlan
from service.core.quiet_hours import QuietHours
from service.core.timezones import describe_local, format_local
from service.db import session_scope
from service.models import (
    Booking,
    Clinic,
    Escalation,
    EscalationStep,
    Message,
    Patient,
    ScheduledMessage,
    StaffMember,
)
from service.outbox import lifecycle
from service.patients.links import unsubscribe_url
from service.patients.reach import address, contact_problem, missing_address
from service.rendering import render
from service.sending.fallback import fall_back
from service.sending.retry import retry_at
from service.settings import Settings

log = logging.getLogger(__name__)
S = MessageStatus


_ROW_WITH_PARTIES = (
    select(ScheduledMessage, Clinic, Booking, Patient)
    .join(Clinic, Clinic.id == ScheduledMessage.clinic_id)  # type: ignore[arg-type]
    .outerjoin(Booking, Booking.id == ScheduledMessage.booking_id)  # type: ignore[arg-type]
    .outerjoin(Patient, Patient.id == ScheduledMessage.patient_id)  # type: ignore[arg-type]
    .where(ScheduledMessage.id == bindparam("message_id"))
    .execution_options(populate_existing=True)
)


class Outcome(StrEnum):
    NOT_QUEUED = "not_queued"  # a duplicate or stale task: the row is not ours to send
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"  # quiet hours
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CRASHED = "crashed"  # our own code raised: counted on the row, tried again or failed (send_guarded)


class Unrenderable(Exception):
    """The message does not render (a template missing for its language, a syntax error, an undefined
    variable): it would fail the same way on every attempt, so the row fails at once."""


def send_guarded(
    message_id: int, *, now: datetime, channels: Mapping[ChannelName, Channel], settings: Settings
) -> Outcome:
    """Send one row in a unit of work of its own; the crash-loop guard at the send boundary.

    An exception in our own code must neither vanish (the row left *queued*, handed back by the lost-task
    sweep every half minute for ever, the log blaming the broker) nor stop the rest of a batch. It is
    counted on the row with its type (never its message, which may quote a phone or a name): before the
    request could leave the row is tried again after a backoff; once it may have left, it is settled with
    the provider like any unsure send. At MAX_SEND_CRASHES the next attempt fails the row for staff to see.
    A database that cannot be reached is not the row's fault: nothing is counted, the sweeps bring it back.
    """
    try:
        with session_scope() as session:
            return send_due_message(session, message_id, now=now, channels=channels, settings=settings)
    except (OperationalError, InterfaceError) as exc:
        what = type(exc).__name__
        log.warning("message %s: database unreachable (%s); left to the sweeps", message_id, what)
        return Outcome.CRASHED
    except Exception as exc:
        log.error("message %s: %s in the send task", message_id, type(exc).__name__)
        try:
            with session_scope() as session:
                _record_crash(session, message_id, type(exc).__name__, now=now, settings=settings)
        except Exception as again:
            log.error("message %s: could not record the crash (%s)", message_id, type(again).__name__)
        return Outcome.CRASHED


def _record_crash(
    session: Session, message_id: int, error: str, *, now: datetime, settings: Settings
) -> None:
    row = session.get(ScheduledMessage, message_id, populate_existing=True)
    if row is None:
        return
    crashes = row.crashes + 1
    detail = f"{error} in our send code (crash {crashes} of {settings.MAX_SEND_CRASHES})"
    if row.status == S.QUEUED:
        again = retry_at(crashes, now=now, settings=settings) or now
        lifecycle.crash_before_sending(session, message_id, now=now, at=again, crashes=crashes, error=detail)
    elif row.status == S.SENDING:
        settle_after = (row.sending_at or now) + timedelta(seconds=settings.SEND_SETTLE_WINDOW_SECONDS)
        lifecycle.crash_while_sending(
            session, message_id, now=now, crashes=crashes, error=detail, settle_after=settle_after
        )


def send_due_message(
    session: Session,
    message_id: int,
    *,
    now: datetime,
    channels: Mapping[ChannelName, Channel],
    settings: Settings,
) -> Outcome:
    # One round trip for the row and everything it is sent on behalf of, as they are now.
    found = session.execute(_ROW_WITH_PARTIES, {"message_id": message_id}).first()
    if found is None or found[0].status != S.QUEUED:
        return Outcome.NOT_QUEUED
    row, clinic, booking, patient = found
    if row.crashes >= settings.MAX_SEND_CRASHES:
        return _fail_unsendable(
            session, row, patient, SendFailure.CRASHED, now=now,
            error=f"our send code failed on this message {row.crashes} times (last: {row.last_error}); "
            "the service's log names the error; report it to whoever runs Aftercare",
        )  # fmt: skip
    staff = session.get(StaffMember, row.staff_member_id) if row.kind == MessageKind.PAGE else None

    reason = _suppression_reason(row, booking, patient, staff)
    if reason:
        return _suppress(session, row, patient, reason, now=now)

    if row.channel == ChannelName.SMS and row.kind == MessageKind.CARE:
        assert patient is not None
        allowed = QuietHours.of(clinic.quiet_start, clinic.quiet_end).next_allowed(now, patient.timezone)
        if allowed > now:
            if lifecycle.defer(session, row.id, now=now, until=allowed):  # type: ignore[arg-type]
                session.commit()
                log.info("message %s deferred to %s", row.id, describe_local(allowed, patient.timezone))
                return Outcome.DEFERRED
            session.rollback()
            return Outcome.NOT_QUEUED

    try:
        outgoing = _render(session, row, booking, patient, staff, clinic, settings)
    except Unrenderable as exc:
        return _fail_unsendable(session, row, patient, SendFailure.TEMPLATE, error=str(exc), now=now)
    attempts = row.attempts + 1
    # Committed before the provider call: if this process dies inside the call, the row is found in
    # *sending* and settled with the provider, never sent again blind. The same UPDATE re-checks the
    # booking and the patient's opt-out, so a cancel or a STOP committed a moment ago wins.
    if not lifecycle.start_sending(session, row.id, now=now, attempts=attempts, body=outgoing.body):  # type: ignore[arg-type]
        session.rollback()
        session.refresh(row)
        for loaded in (booking, patient):
            if loaded is not None:
                session.refresh(loaded)
        late_reason = row.status == S.QUEUED and _suppression_reason(row, booking, patient, staff)
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
        if row.kind == MessageKind.PAGE:
            # Nobody reads a page that never goes: the next level is paged at once, as for a failed page.
            enqueue_after_commit(session, PAGE_FAILED, row.id)
        elif patient is not None and row.channel == ChannelName.SMS and patient.sms_unreachable_reason:
            fall_back(session, row, patient, problem=None, now=now)
        session.commit()
        return Outcome.SUPPRESSED
    session.rollback()
    return Outcome.NOT_QUEUED


def _fail_unsendable(
    session: Session,
    row: ScheduledMessage,
    patient: Patient | None,
    why: SendFailure,
    *,
    error: str,
    now: datetime,
) -> Outcome:
    """Our side cannot send this row: failed at once with the reason, never looping. A page moves paging
    on to the next level; a patient's message falls back to the other channel where there is one. The
    watchdog raises its own alarm on the first such failure (service/monitoring/checks.py)."""
    message_id: int = row.id  # type: ignore[assignment]
    if not lifecycle.fail_unsendable(session, message_id, now=now, error=error[:500], why=why):
        session.rollback()
        return Outcome.NOT_QUEUED
    _after_failure(session, row, patient, problem=None, code=why.value, now=now)
    session.commit()
    log.error("message %s cannot be sent (%s): step %s, template %s", message_id, why, row.step, row.template)
    return Outcome.FAILED


def _after_failure(
    session: Session,
    row: ScheduledMessage,
    patient: Patient | None,
    *,
    problem: RecipientProblem | None,
    code: str | None,
    now: datetime,
) -> None:
    """What follows a row failing for good: a page moves paging on at once; a care message or an answer
    falls back to the patient's other channel."""
    if row.kind == MessageKind.PAGE:
        enqueue_after_commit(session, PAGE_FAILED, row.id)  # the next level, at once
    elif patient is not None and row.kind in (MessageKind.CARE, MessageKind.REPLY):
        fall_back(session, row, patient, problem=problem, now=now)
    audit.record(
        session, row.clinic_id, "worker", "message.failed", f"message:{row.id}", now,
        code=code, channel=row.channel,
    )  # fmt: skip


def _suppression_reason(
    row: ScheduledMessage, booking: Booking | None, patient: Patient | None, staff: StaffMember | None
) -> str | None:
    if row.kind == MessageKind.PAGE:
        if staff is None or not staff.active:
            return "the staff member is no longer active"
        return (
            None
            if (staff.phone if row.channel == ChannelName.SMS else staff.email)
            else "no address for this page"
        )
    if row.kind in (MessageKind.REPLY, MessageKind.STAFF_REPLY):
        # An answer to a message the patient just sent goes even if they opted out of reminders or the
        # booking was cancelled: they wrote to us (docs/architecture.md#invariants).
        if row.to_address:
            return None
        return missing_address(patient, row.channel) if patient else "the message has no recipient"
    assert booking is not None and patient is not None
    if booking.status == BookingStatus.CANCELLED:
        return "the booking was cancelled"
    return contact_problem(patient, row.channel)


def _render(
    session: Session,
    row: ScheduledMessage,
    booking: Booking | None,
    patient: Patient | None,
    staff: StaffMember | None,
    clinic: Clinic,
    settings: Settings,
) -> OutgoingMessage:
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    context: dict[str, Any] = {
        "clinic_name": clinic.name,
        "clinic_phone": display_phone(clinic.sms_from),
        "emergency_number": clinic.emergency_number,
        "include_stop_notice": False,
        "step": row.step,
    }
    headers: dict[str, str] = {}
    if row.kind == MessageKind.PAGE:
        assert staff is not None
        context.update(_page_context(session, row, base))
        language, to = "en", staff.phone if row.channel == ChannelName.SMS else staff.email
    else:
        if patient is not None:
            context["emergency_number"] = emergency_number_for(
                patient.phone, fallback=clinic.emergency_number
            )
            link = unsubscribe_url(patient.id, settings)  # type: ignore[arg-type]
            headers = {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
            context.update(
                first_name=patient.first_name,
                unsubscribe_url=link,
                include_stop_notice=row.channel == ChannelName.SMS and _first_sms(session, row, patient),
            )
        if booking is not None and patient is not None:
            context.update(
                treatment=booking.treatment,
                treatment_label=CarePlan.label_in_snapshot(booking.plan_snapshot, patient.language),
                starts_at_local=format_local(booking.starts_at, patient.timezone, patient.language),
            )
        language = patient.language if patient else "en"
        to = row.to_address or (address(patient, row.channel) if patient else None)
    context.update(row.context)
    try:
        rendered = render(row.template, row.channel, language, context)
    except (TemplateError, ValueError) as exc:
        # The exception's text names the template or the variable, never the patient's details.
        raise Unrenderable(
            f"cannot render template {row.template!r} ({row.channel}, {language}): {type(exc).__name__}: "
            f"{exc}; fix the template or the care plan, then restart the service"
        ) from exc
    if row.channel == ChannelName.SMS:
        return OutgoingMessage(
            outbox_id=row.id,  # type: ignore[arg-type]
            channel=ChannelName.SMS,
            to=to or "",
            sender=clinic.sms_from,
            body=rendered.body,
            status_callback=f"{base}/webhooks/twilio/status?message_id={row.id}",
        )
    return OutgoingMessage(
        outbox_id=row.id,  # type: ignore[arg-type]
        channel=ChannelName.EMAIL,
        to=to or "",
        sender=clinic.email_from or settings.EMAIL_FROM,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        headers=headers,
    )


def _first_sms(session: Session, row: ScheduledMessage, patient: Patient) -> bool:
    """The first SMS a patient gets carries the STOP instructions; later ones do not."""
    return not session.scalar(_EARLIER_SMS, {"patient_id": patient.id, "message_id": row.id})


_EARLIER_SMS = (
    select(func.count())
    .select_from(ScheduledMessage)
    .where(
        ScheduledMessage.patient_id == bindparam("patient_id"),
        ScheduledMessage.channel == ChannelName.SMS,
        ScheduledMessage.status.in_(sorted(lifecycle.GONE)),  # type: ignore[union-attr]
        ScheduledMessage.id != bindparam("message_id"),
    )
)


def _present(finding: dict[str, Any]) -> bool:
    return not (finding["negated"] or finding["hypothetical"] or finding["historical"])


def _page_context(session: Session, row: ScheduledMessage, base_url: str) -> dict[str, Any]:
    """What a page says. The SMS carries no clinical words (initials, severity, code, link); the email,
    which staff read signed in, carries the messages and what triage found."""
    escalation = session.get(Escalation, row.escalation_id)
    step = session.get(EscalationStep, row.escalation_step_id)
    assert escalation is not None and step is not None
    patient = session.get(Patient, escalation.patient_id) if escalation.patient_id else None
    messages = session.scalars(
        select(Message).where(Message.escalation_id == escalation.id).order_by(Message.received_at)  # type: ignore[arg-type]
    ).all()
    return {
        "severity": str(escalation.severity),
        "ack_code": escalation.ack_code,
        "initials": patient.initials if patient else "?",
        "patient_name": f"{patient.first_name} {patient.last_name}" if patient else "an unknown sender",
        "alert_title": escalation.title,
        "step_number": step.number,
        "reason": step.reason,
        "dashboard_url": f"{base_url}/dashboard/escalations/{escalation.id}",
        "messages": [
            {
                "received": f"{m.received_at:%Y-%m-%d %H:%M} UTC",
                "text": m.triage_text or m.body,
                "findings": [
                    f["concept"]
                    for f in m.findings
                    if not (f["negated"] or f["hypothetical"] or f["historical"])
                ],
            }
            for m in messages
        ],
    }


def _record_failure(
    session: Session,
    row: ScheduledMessage,
    patient: Patient | None,
    error: DeliveryError,
    *,
    attempts: int,
    now: datetime,
    settings: Settings,
) -> Outcome:
    detail = str(error)[:500]
    message_id: int = row.id  # type: ignore[assignment]
    if error.outcome_unknown:
        # An answered error is conclusive after the grace period (no window); a request left without an
        # answer may still be acted on by the provider until the settle window after it left (``now``, when
        # the row went *sending*).
        settle_after = (
            None if error.answered else now + timedelta(seconds=settings.SEND_SETTLE_WINDOW_SECONDS)
        )
        if lifecycle.mark_unknown(
            session, message_id, now=now, error=detail, code=error.code, settle_after=settle_after
        ):
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
    elif (
        error.problem not in (None, RecipientProblem.OPTED_OUT) and row.channel == ChannelName.SMS and patient
    ):
        # The channel's message already says what is wrong; add where staff put it right.
        detail = f"{detail}; correct it with PATCH /api/v1/patients/{patient.id}"
    if lifecycle.fail(session, message_id, now=now, error=detail, code=error.code):
        _after_failure(session, row, patient, problem=error.problem, code=error.code, now=now)
    session.commit()
    log.warning("message %s failed permanently", message_id)
    return Outcome.FAILED
