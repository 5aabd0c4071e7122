"""Send one due outbox row: re-check it may still go, render it, hand it to its channel, record the outcome.

The checks run at send time, not at booking time, because that is when they are true: a booking may have
been cancelled, a patient may have texted STOP, and 07:55 in the patient's timezone is still night.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from jinja2 import TemplateError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session

from service import audit
from service.channels.base import Channel, DeliveryError, OutgoingMessage
from service.core.enums import Channel as ChannelName
from service.core.enums import MessageStatus, RecipientProblem, SendFailure
from service.core.quiet_hours import QuietHours
from service.core.timezones import describe_local
from service.db import session_scope
from service.models import Clinic, ScheduledMessage
from service.outbox import lifecycle
from service.outbox.purpose import (
    Address,
    Parties,
    Purpose,
    Purposes,
    load_many_parties,
    load_parties,
    purpose_of,
)
from service.rendering import render
from service.sending.failure import after_failure
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
    CRASHED = "crashed"  # our own code raised: counted on the row, tried again or failed (send_guarded)


class Unrenderable(Exception):
    """The message does not render (a template missing for its language, a syntax error, an undefined
    variable): it would fail the same way on every attempt, so the row fails at once."""


def send_guarded(
    message_id: int,
    *,
    now: datetime,
    channels: Mapping[ChannelName, Channel],
    purposes: Purposes,
    settings: Settings,
) -> Outcome:
    """``send_batch_guarded`` for one row."""
    [outcome] = send_batch_guarded(
        [message_id], now=now, channels=channels, purposes=purposes, settings=settings
    )
    return outcome


def send_batch_guarded(
    message_ids: Sequence[int],
    *,
    now: datetime,
    channels: Mapping[ChannelName, Channel],
    purposes: Purposes,
    settings: Settings,
) -> list[Outcome]:
    """Send a task's rows in a unit of work of their own; the crash-loop guard at the send boundary.

    An exception in our own code must neither vanish (the row left *queued*, handed back by the lost-task
    sweep every half minute for ever, the log blaming the broker) nor stop the rest of a batch. It is
    counted on the row it happened on (``send_due_messages``), with its type (never its message, which may
    quote a phone or a name). A database that cannot be reached is not a row's fault: nothing is counted,
    and the sweeps bring back whatever the batch left queued or sending.
    """
    try:
        with session_scope() as session:
            return send_due_messages(
                session, message_ids, now=now, channels=channels, purposes=purposes, settings=settings
            )
    except (OperationalError, InterfaceError) as exc:
        what = type(exc).__name__
        log.warning("messages %s: database unreachable (%s); left to the sweeps", list(message_ids), what)
        return [Outcome.CRASHED] * len(message_ids)


def _crashed(message_id: int, exc: Exception, *, now: datetime, settings: Settings) -> Outcome:
    """Count a crash of our own code on the row, in a transaction of its own: before the request could
    leave the row is tried again after a backoff; once it may have left, it is settled with the provider
    like any unsure send. At MAX_SEND_CRASHES the next attempt fails the row for staff to see."""
    if isinstance(exc, OperationalError | InterfaceError):
        raise exc  # the database, not the row: send_batch_guarded leaves it to the sweeps
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


@dataclass(frozen=True)
class _Ready:
    """A row that may start sending now, rendered."""

    parties: Parties
    purpose: Purpose
    outgoing: OutgoingMessage
    # Counted before the row is moved: a session that expires on commit would read the new value back.
    attempts: int

    @property
    def message_id(self) -> int:
        return self.outgoing.outbox_id


@dataclass(frozen=True)
class _Hold:
    """A row that may not start now, and what to do instead: suppress it (``reason``), wait for the end
    of quiet hours (``until``), or fail it (``unsendable``)."""

    parties: Parties
    purpose: Purpose
    reason: str | None = None
    until: datetime | None = None
    zone: str | None = None
    unsendable: SendFailure | None = None
    error: str = ""


def _decide(
    session: Session, parties: Parties, purposes: Purposes, *, now: datetime, settings: Settings
) -> _Ready | _Hold:
    """Whether a queued row may start now, asked of its purpose; no writes."""
    row, clinic = parties.row, parties.clinic
    purpose = purpose_of(purposes, row)
    if row.crashes >= settings.MAX_SEND_CRASHES:
        return _Hold(
            parties, purpose, unsendable=SendFailure.CRASHED,
            error=f"our send code failed on this message {row.crashes} times (last: {row.last_error}); "
            "the service's log names the error; report it to whoever runs Aftercare",
        )  # fmt: skip
    found = purpose.address(session, parties, settings)
    if isinstance(found, str):
        return _Hold(parties, purpose, reason=found)
    if found.quiet_hours_zone is not None:
        quiet = QuietHours.of(clinic.quiet_start, clinic.quiet_end)
        allowed = quiet.next_allowed(now, found.quiet_hours_zone)
        if allowed > now:
            return _Hold(parties, purpose, until=allowed, zone=found.quiet_hours_zone)
    try:
        return _Ready(parties, purpose, _render(row, found, clinic, settings), attempts=row.attempts + 1)
    except Unrenderable as exc:
        return _Hold(parties, purpose, unsendable=SendFailure.TEMPLATE, error=str(exc))


def _hold(session: Session, hold: _Hold, *, now: datetime) -> Outcome:
    row = hold.parties.row
    assert row.id is not None
    if hold.unsendable is not None:
        return _fail_unsendable(session, row, hold.purpose, hold.unsendable, error=hold.error, now=now)
    if hold.reason is not None:
        return _suppress(session, hold.parties, hold.purpose, hold.reason, now=now)
    assert hold.until is not None and hold.zone is not None
    if lifecycle.defer(session, row.id, now=now, until=hold.until):
        session.commit()
        log.info("message %s deferred to %s", row.id, describe_local(hold.until, hold.zone))
        return Outcome.DEFERRED
    session.rollback()
    return Outcome.NOT_QUEUED


def send_due_message(
    session: Session,
    message_id: int,
    *,
    now: datetime,
    channels: Mapping[ChannelName, Channel],
    purposes: Purposes,
    settings: Settings,
) -> Outcome:
    """``send_due_messages`` for one row."""
    [outcome] = send_due_messages(
        session, [message_id], now=now, channels=channels, purposes=purposes, settings=settings
    )
    return outcome


def send_due_messages(
    session: Session,
    message_ids: Sequence[int],
    *,
    now: datetime,
    channels: Mapping[ChannelName, Channel],
    purposes: Purposes,
    settings: Settings,
) -> list[Outcome]:
    """Send queued rows: one round trip loads them all; each is asked of its purpose, rendered and handed
    to its channel; the rows that start sending are moved together and committed once before any provider
    call, and the ones sent are recorded together. A row held back (suppressed, deferred, unsendable) or
    failing is settled on its own. Returns an outcome per id, in order."""
    outcomes: dict[int, Outcome] = {}
    everything = load_many_parties(session, message_ids)
    ready: list[_Ready] = []
    # A second row to the same patient on the same channel waits for the first to be sent: what it says
    # may depend on it (only the first SMS a patient gets carries the STOP notice).
    same_recipient: set[tuple[int, str]] = set()
    later: list[int] = []
    for message_id in message_ids:
        parties = everything.get(message_id)
        if parties is None or parties.row.status != S.QUEUED:
            outcomes[message_id] = Outcome.NOT_QUEUED
            continue
        try:
            decided = _decide(session, parties, purposes, now=now, settings=settings)
            if isinstance(decided, _Hold):
                outcomes[message_id] = _hold(session, decided, now=now)
            elif (recipient := _recipient_key(parties.row)) in same_recipient:
                later.append(message_id)
            else:
                if recipient is not None:
                    same_recipient.add(recipient)
                ready.append(decided)
        except Exception as exc:
            session.rollback()
            outcomes[message_id] = _crashed(message_id, exc, now=now, settings=settings)

    started = _start_sending(session, ready, outcomes, now=now, settings=settings)
    sent: list[tuple[int, str]] = []
    for going in started:
        message_id = going.message_id
        try:
            receipt = channels[going.outgoing.channel].send(going.outgoing)
        except DeliveryError as error:
            row, purpose = going.parties.row, going.purpose
            outcomes[message_id] = _record_failure(
                session, row, purpose, error, attempts=going.attempts, now=now, settings=settings
            )
            continue
        except Exception as exc:
            outcomes[message_id] = _crashed(message_id, exc, now=now, settings=settings)
            continue
        sent.append((message_id, receipt.provider_id))
        outcomes[message_id] = Outcome.SENT
    for message_id, provider_id in sent:
        if not lifecycle.mark_sent(session, message_id, now=now, provider_id=provider_id):
            # A status callback settled the row first (it carries the same provider id): nothing to add.
            log.info("message %s was already settled by its status callback", message_id)
    session.commit()
    for going in started:
        if outcomes[going.message_id] == Outcome.SENT:
            log.info("message %s sent by %s", going.message_id, going.outgoing.channel)
    if later:
        sent_later = send_due_messages(
            session, later, now=now, channels=channels, purposes=purposes, settings=settings
        )
        outcomes.update(zip(later, sent_later, strict=True))
    return [outcomes[message_id] for message_id in message_ids]


def _recipient_key(row: ScheduledMessage) -> tuple[int, str] | None:
    return (row.patient_id, row.channel) if row.patient_id is not None else None


def _start_sending(
    session: Session,
    ready: list[_Ready],
    outcomes: dict[int, Outcome],
    *,
    now: datetime,
    settings: Settings,
) -> list[_Ready]:
    """queued → sending for every ready row, committed once, before any provider call: if this process
    dies inside a call, its row is found in *sending* and settled with the provider, never sent again
    blind. The same UPDATE asks each row's purpose again (booking, opt-out, staff member), so a cancel or a
    STOP committed a moment ago wins; a row that lost such a race is suppressed."""
    started: list[_Ready] = []
    lost: list[_Ready] = []
    for going in ready:
        moved = lifecycle.start_sending(
            session, going.message_id, now=now, attempts=going.attempts, body=going.outgoing.body,
            purpose=going.purpose,
        )  # fmt: skip
        (started if moved else lost).append(going)
    session.commit()
    for going in lost:
        # Still ours and no longer allowed: suppressed; otherwise another worker or a cancel moved it.
        outcomes[going.message_id] = Outcome.NOT_QUEUED
        again = load_parties(session, going.message_id)
        if again is None or again.row.status != S.QUEUED:
            continue
        found = going.purpose.address(session, again, settings)
        if isinstance(found, str):
            outcomes[going.message_id] = _suppress(session, again, going.purpose, found, now=now)
    return started


def _suppress(session: Session, parties: Parties, purpose: Purpose, reason: str, *, now: datetime) -> Outcome:
    row = parties.row
    assert row.id is not None
    if lifecycle.suppress(session, row.id, now=now, reason=reason):
        audit.record(
            session, row.clinic_id, "worker", "message.suppressed", f"message:{row.id}", now, reason=reason
        )
        purpose.after_suppressed(session, parties, now=now)
        session.commit()
        return Outcome.SUPPRESSED
    session.rollback()
    return Outcome.NOT_QUEUED


def _fail_unsendable(
    session: Session,
    row: ScheduledMessage,
    purpose: Purpose,
    why: SendFailure,
    *,
    error: str,
    now: datetime,
) -> Outcome:
    """Our side cannot send this row: failed at once with the reason, never looping, and its purpose
    decides what follows (a page moves paging on; a patient's message tries the other channel). The
    watchdog raises its own alarm on the first such failure (service/monitoring/checks.py)."""
    assert row.id is not None
    if not lifecycle.fail_unsendable(session, row.id, now=now, error=error[:500], why=why):
        session.rollback()
        return Outcome.NOT_QUEUED
    after_failure(session, row, purpose, problem=None, code=why.value, actor="worker", now=now)
    session.commit()
    log.error("message %s cannot be sent (%s): step %s, template %s", row.id, why, row.step, row.template)
    return Outcome.FAILED


def _render(row: ScheduledMessage, found: Address, clinic: Clinic, settings: Settings) -> OutgoingMessage:
    assert row.id is not None
    context = {**found.context, **row.context}
    try:
        rendered = render(row.template, row.channel, found.language, context)
    except (TemplateError, ValueError) as exc:
        # The exception's text names the template or the variable, never the patient's details.
        raise Unrenderable(
            f"cannot render template {row.template!r} ({row.channel}, {found.language}): "
            f"{type(exc).__name__}: {exc}; fix the template or the care plan, then restart the service"
        ) from exc
    if row.channel == ChannelName.SMS:
        return OutgoingMessage(
            outbox_id=row.id,
            channel=ChannelName.SMS,
            to=found.to,
            sender=clinic.sms_from,
            body=rendered.body,
            status_callback=f"{settings.PUBLIC_BASE_URL.rstrip('/')}/webhooks/twilio/status?message_id={row.id}",
        )
    return OutgoingMessage(
        outbox_id=row.id,
        channel=ChannelName.EMAIL,
        to=found.to,
        sender=clinic.email_from or settings.EMAIL_FROM,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        headers=found.headers,
    )


def _record_failure(
    session: Session,
    row: ScheduledMessage,
    purpose: Purpose,
    error: DeliveryError,
    *,
    attempts: int,
    now: datetime,
    settings: Settings,
) -> Outcome:
    detail = str(error)[:500]
    assert row.id is not None
    message_id = row.id
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
    elif error.problem not in (None, RecipientProblem.OPTED_OUT) and _to_patients_phone(row):
        # The channel's message already says what is wrong; add where staff put it right.
        detail = f"{detail}; correct it with PATCH /api/v1/patients/{row.patient_id}"
    if lifecycle.fail(session, message_id, now=now, error=detail, code=error.code):
        after_failure(session, row, purpose, problem=error.problem, code=error.code, actor="worker", now=now)
    session.commit()
    log.warning("message %s failed permanently", message_id)
    return Outcome.FAILED


def _to_patients_phone(row: ScheduledMessage) -> bool:
    return row.channel == ChannelName.SMS and row.patient_id is not None and not row.to_address
