"""The inbound worker's one pipeline for a stored message: route → triage → decide the escalation → answer
through the outbox (docs/architecture.md#the-inbox).

Routes, in order: a carrier keyword alone (applied by the webhook; HELP is answered here) | a staff
command from a staff phone of the clinic | an automatic email | a patient's report. Everything a message
causes — its triage, the escalation it opens or joins, our answer, a consent change — is written in one
transaction together with the message's move to *processed*: a worker killed mid-message leaves nothing
half done, and a message is never processed twice (``process``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import getaddresses

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from service import audit
from service.celery import FETCH_MEDIA, SEND_MESSAGE, enqueue_after_commit
from service.channels.email_text import MAX_BODY
from service.channels.email_text import new_text as email_new_text
from service.channels.mailgun import is_automatic
from service.channels.sender_trust import DnsLookup, verify_sender
from service.core.enums import ALARMING, Channel, InboundState, InboxState, Keyword, MessageKind, Severity
from service.core.phones import emergency_number_for
from service.models import Booking, Clinic, EscalationStep, Message, Patient, ScheduledMessage, id_of
from service.outbox import lifecycle
from service.outbox.lifecycle import NewRow
from service.paging.escalations import open_for_message
from service.paging.staff_commands import handle, staff_member_for
from service.patients.consent import set_sms_opt_out
from service.replies.answers import answer_for, notice
from service.triage import Lexicon, TriageResult, triage
from service.triage.decide import Finding

log = logging.getLogger(__name__)

# Replies within this window are read together: "I have" … "pus" is one report.
BURST_WINDOW = timedelta(minutes=5)
# At most this many automatic routine answers per patient per hour, so two robots cannot talk forever;
# urgent and emergency replies are always answered.
AUTO_REPLY_CAP_PER_HOUR = 3
# Triage reads at most this much of a message (a few pages; at a few microseconds a character, well under
# a second). A longer one is triaged on its beginning and always waits for a person in the inbox.
TRIAGE_LIMIT = 30_000
# A message whose processing failed this many times (a crash counts) is shown to staff as it came.
MAX_ATTEMPTS = 5

_RANK = {severity: severity.rank for severity in Severity}


@dataclass(frozen=True)
class Outcome:
    """What one run of the pipeline did with a message (for the task's log line: no PHI)."""

    state: str  # processed | already | failed | retry
    severity: str | None = None


def process(
    session: Session,
    message_id: int,
    *,
    now: datetime,
    lexicon: Lexicon,
    dns: DnsLookup | None = None,
) -> Outcome:
    """Process one stored message exactly once. Commits.

    First the try is counted in a transaction of its own, so a try that crashes the worker still counts;
    then everything the message causes is written in one transaction that begins by moving the message
    from *received* to *processed* with a guarded UPDATE — the row lock it takes makes a second worker on
    the same message wait, then find it processed and do nothing. A failure rolls it all back; the
    ``MAX_ATTEMPTS``-th leaves the message *failed*, shown to staff with its text.
    """
    attempts = session.scalar(
        update(Message)
        .where(col(Message.id) == message_id, col(Message.state) == InboundState.RECEIVED)
        .values(attempts=Message.attempts + 1, last_attempt_at=now)
        .returning(col(Message.attempts))
    )
    session.commit()
    if attempts is None:
        return Outcome("already")
    if attempts > MAX_ATTEMPTS:
        # Tried and crashed (or failed) every time: stop trying, show it to a person.
        fail(session, message_id, reason="the worker stopped during processing", now=now)
        return Outcome("failed")
    try:
        claimed = session.execute(
            update(Message)
            .where(col(Message.id) == message_id, col(Message.state) == InboundState.RECEIVED)
            .values(state=InboundState.PROCESSED, processed_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
            session.rollback()
            return Outcome("already")
        message = session.get(Message, message_id, populate_existing=True)
        assert message is not None
        _run(session, message, now=now, lexicon=lexicon, dns=dns)
        session.commit()
        return Outcome("processed", str(message.severity))
    except Exception as error:
        session.rollback()
        log.warning(
            "inbound message %s: processing failed (%s), try %s of %s",
            message_id, type(error).__name__, attempts, MAX_ATTEMPTS,
        )  # fmt: skip
        if attempts >= MAX_ATTEMPTS:
            fail(session, message_id, reason=f"processing failed ({type(error).__name__})", now=now)
            return Outcome("failed")
        return Outcome("retry")


def fail(session: Session, message_id: int, *, reason: str, now: datetime) -> None:
    """Give up on a message: it waits in the staff inbox as "could not be processed", with its text, and
    the watchdog raises its alarm while any is unanswered. Commits."""
    session.execute(
        update(Message)
        .where(col(Message.id) == message_id, col(Message.state) == InboundState.RECEIVED)
        .values(
            state=InboundState.FAILED, failure=reason, inbox_state=InboxState.NEEDS_REPLY, processed_at=now
        )
    )
    message = session.get(Message, message_id, populate_existing=True)
    if message is not None and message.state == InboundState.FAILED:
        audit.record(
            session, message.clinic_id, "worker", "message.not_processed", f"message:{message_id}", now,
            reason=reason,
        )  # fmt: skip
    session.commit()


def stale(session: Session, *, now: datetime, older_than: timedelta, limit: int = 500) -> list[int]:
    """Messages whose processing task was lost (the broker down at the webhook's commit, a worker gone):
    still *received* ``older_than`` after their last try or their arrival."""
    cutoff = now - older_than
    return [
        id_of_row
        for id_of_row in session.scalars(
            select(col(Message.id))
            .where(
                col(Message.state) == InboundState.RECEIVED,
                func.coalesce(col(Message.last_attempt_at), col(Message.received_at)) <= cutoff,
            )
            .order_by(col(Message.id))
            .limit(limit)
        ).all()
        if id_of_row is not None
    ]


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


def _run(
    session: Session, message: Message, *, now: datetime, lexicon: Lexicon, dns: DnsLookup | None
) -> None:
    clinic = session.get(Clinic, message.clinic_id)
    assert clinic is not None
    text = _read(message, dns=dns)
    too_long = len(text) > TRIAGE_LIMIT or len(message.body) > MAX_BODY
    text = text[:TRIAGE_LIMIT]
    patients = _patients(session, clinic, message)
    booking = _latest_booking(session, patients, now=message.received_at)
    patient = _patient_of(booking, patients)
    message.patient_id = patient.id if patient else None
    message.booking_id = booking.id if booking else None
    message.ambiguous_patient = len({p.id for p in patients}) > 1
    if message.media:
        enqueue_after_commit(session, FETCH_MEDIA, message.id)  # kept by us, then deleted at the provider

    # 1. A carrier keyword alone: STOP and START were applied by the webhook; HELP is answered.
    if message.keyword is not None:
        message.triage_text = text
        if message.keyword == Keyword.HELP:
            _notice(session, message, "help", clinic, patient, now=now)
        return
    # 2. A staff member's phone: a command ("ACK 4K7P"), never read as a patient's symptoms.
    staff = (
        staff_member_for(session, id_of(clinic), message.sender) if message.channel == Channel.SMS else None
    )
    if staff is not None:
        message.staff_member_id = staff.id
        message.triage_text = ""
        answer = handle(session, clinic, staff, text, now=now)
        _queue_answer(session, message, clinic, None, None, "notice", {"text": answer}, now=now)
        return
    # 3 and 4. An automatic email, or a patient's report: triaged alike, answered differently.
    result = _triage(session, message, text, patient, booking, lexicon=lexicon)
    escalation_paged = False
    if message.severity in ALARMING and (not message.automatic or message.severity == Severity.EMERGENCY):
        # An automatic email pages only for a present emergency: an out-of-office that says "urgent" does not.
        escalation = open_for_message(
            session, clinic=clinic, patient=patient, booking=booking, message=message,
            severity=message.severity, now=now,
        )  # fmt: skip
        escalation_paged = _someone_paged(session, id_of(escalation))
    message.inbox_state = _inbox_state(message)
    if too_long and message.inbox_state is None and message.escalation_id is None:
        message.inbox_state = InboxState.NEEDS_REPLY  # read on its beginning only: a person reads the rest
    audit.record(
        session, clinic.id, "worker", "message.triaged", f"message:{message.id}", now,
        severity=message.severity, verified=message.sender_verified, automatic=message.automatic,
    )  # fmt: skip
    if message.automatic:
        return  # never answered, never a consent change: two robots must not talk forever
    if not message.sender_verified:
        # Anyone can write a From header: an unproven email is triaged, paged and shown — marked — but
        # never answered and never changes consent. A person reads it.
        return
    if result.keyword == Keyword.STOP:
        _plain_language_opt_out(session, message, clinic, patients, now=now)
    _answer(session, message, result, clinic, patient, booking, staff_paged=escalation_paged, now=now)


def _read(message: Message, *, dns: DnsLookup | None) -> str:
    """The patient's new words, and for an email, whether it is automatic and who proved to send it."""
    if message.channel == Channel.SMS:
        return message.body
    headers = tuple((name, value) for name, value in message.headers)
    message.automatic = is_automatic(headers)
    trust = verify_sender(
        raw=message.raw,
        headers=headers,
        envelope_sender=message.sender,
        from_address=_from_address(headers) or message.sender,
        dns=dns,
    )
    message.sender_verified = trust.verified
    message.sender_check = trust.reason
    return email_new_text(message.body)


def _from_address(headers: tuple[tuple[str, str], ...]) -> str:
    for name, value in headers:
        if name.lower() == "from":
            found = [address for _, address in getaddresses([value]) if address]
            return found[0] if len(found) == 1 else ""
    return ""


def _triage(
    session: Session,
    message: Message,
    text: str,
    patient: Patient | None,
    booking: Booking | None,
    *,
    lexicon: Lexicon,
) -> TriageResult:
    """This message's triage, in the thread of the patient's last few minutes.

    Its severity is the higher of its own and that of any finding of the joined text that reaches into it
    ("I have" … "pus"); a finding wholly inside earlier messages (found in them alone) never raises it.
    """
    day = _day_since_treatment(booking, message.received_at)
    treatment = booking.treatment if booking else None
    flags = patient.risk_flags if patient else ()
    # The learned second opinion knows text messages only (service.triage.decide.triage).
    learned = message.channel == Channel.SMS
    own = triage(
        text, day=day, lexicon=lexicon, treatment=treatment, risk_flags=flags, second_opinion=learned
    )
    findings = list(own.findings)
    severity = Severity(own.severity)
    earlier = _earlier_in_thread(session, message, patient)
    if earlier and own.keyword is None:
        before = ". ".join(earlier)  # sentences end between messages: "no pus" then "fever"
        joined = triage(f"{before}. {text}", day=day, lexicon=lexicon, treatment=treatment, risk_flags=flags)
        alone = triage(before, day=day, lexicon=lexicon, treatment=treatment, risk_flags=flags)
        # (Threads are SMS only: the second opinion speaks in all three.)
        seen = {(f.concept, f.present) for f in alone.findings} | {
            (f.concept, f.present) for f in own.findings
        }
        reaching: list[Finding] = [f for f in joined.findings if f.present and (f.concept, True) not in seen]
        findings.extend(reaching)
        for finding in reaching:
            if Severity(finding.severity).rank > severity.rank:
                severity = Severity(finding.severity)
    message.triage_text = lexicon.strip_quoted(text)
    message.severity = severity
    message.keyword = Keyword(own.keyword) if own.keyword else None
    message.findings = [finding.to_json() for finding in findings]
    return own


def _earlier_in_thread(session: Session, message: Message, patient: Patient | None) -> list[str]:
    """The patient's texts of the few minutes before this one, oldest first — stored ones, processed or
    not, so the order the worker takes them in changes nothing."""
    if patient is None or message.channel != Channel.SMS:
        return []
    return list(
        session.scalars(
            select(col(Message.body))
            .where(
                col(Message.patient_id) == patient.id,
                col(Message.channel) == Channel.SMS,
                col(Message.keyword).is_(None),
                col(Message.staff_member_id).is_(None),
                col(Message.id) != message.id,
                col(Message.received_at) >= message.received_at - BURST_WINDOW,
                col(Message.received_at) <= message.received_at,
                col(Message.id) < message.id,
            )
            .order_by(col(Message.received_at), col(Message.id))
        ).all()
    )


def _inbox_state(message: Message) -> InboxState | None:
    """Routine replies, anything automatic or from an unknown or unproven sender or a phone several
    patients share wait in the staff inbox for a person. Urgent and emergency ones are escalations."""
    if message.severity in ALARMING and (not message.automatic or message.severity == Severity.EMERGENCY):
        return None
    if message.automatic or message.severity in ALARMING:
        return InboxState.NEEDS_REPLY  # an automatic email that reads as urgent: a person looks
    if message.patient_id is None or message.ambiguous_patient or not message.sender_verified:
        return InboxState.NEEDS_REPLY
    return InboxState.NEEDS_REPLY if message.severity == Severity.ROUTINE else None


def _someone_paged(session: Session, escalation_id: int) -> bool:
    """The escalation has a round of paging: only then may the answer say "we have alerted the clinic"."""
    return bool(
        session.scalar(
            select(func.count())
            .select_from(EscalationStep)
            .where(col(EscalationStep.escalation_id) == escalation_id)
        )
    )


def _plain_language_opt_out(
    session: Session, message: Message, clinic: Clinic, patients: list[Patient], *, now: datetime
) -> None:
    """ "Stop texting me": by SMS, honoured at once, as the carrier would; by email, a confirmation link
    goes to the address on file first — an email's From proves less than a phone's carrier."""
    if message.channel == Channel.SMS:
        set_sms_opt_out(session, id_of(clinic), message.sender, opted_out=True, now=now)
        return
    for patient in patients:
        _confirm_email_opt_out(session, message, patient, clinic, now=now)


def _confirm_email_opt_out(
    session: Session, message: Message, patient: Patient, clinic: Clinic, *, now: datetime
) -> None:
    """An email to the address on file with the one-click link that opts out (the one every email of
    ours carries): only the owner of the address can act on it. At most one a day."""
    recent = session.scalar(
        select(func.count())
        .select_from(ScheduledMessage)
        .where(
            col(ScheduledMessage.patient_id) == patient.id,
            col(ScheduledMessage.template) == "opt_out_confirm",
            col(ScheduledMessage.created_at) >= now - timedelta(days=1),
        )
    )
    if recent:
        return
    row = lifecycle.queue_now(
        session,
        NewRow(
            kind=MessageKind.REPLY,
            clinic_id=id_of(clinic),
            patient_id=patient.id,
            step=f"opt-out-confirm-{message.id}-{patient.id}",
            channel=Channel.EMAIL,
            template="opt_out_confirm",
            send_at=now,
        ),
        now=now,
    )
    assert row is not None
    enqueue_after_commit(session, SEND_MESSAGE, row.id)


def _answer(
    session: Session,
    message: Message,
    result: TriageResult,
    clinic: Clinic,
    patient: Patient | None,
    booking: Booking | None,
    *,
    staff_paged: bool,
    now: datetime,
) -> None:
    """Our answer, through the outbox, in the patient's language, on the channel they wrote on."""
    severity = Severity(message.severity)
    if patient is None:
        if message.channel == Channel.SMS:
            _notice(session, message, "unknown_sender", clinic, None, now=now)
        return  # an email from an address we do not know waits for a person
    if severity not in ALARMING:
        if result.keyword == Keyword.STOP:
            if message.channel == Channel.SMS:
                _notice(session, message, "opted_out", clinic, patient, now=now)
            return  # by email, the confirmation link is the answer (_confirm_email_opt_out)
        if severity == Severity.NONE or _answered_recently(session, patient, now=now):
            return
    answer = (
        answer_for(message.triage_text, patient.language, clinic) or ""
        if severity == Severity.ROUTINE
        else ""
    )
    _queue_answer(
        session, message, clinic, patient, booking, f"reply_{severity}",
        {"answer": answer, "staff_paged": staff_paged}, now=now,
    )  # fmt: skip


def _notice(
    session: Session, message: Message, name: str, clinic: Clinic, patient: Patient | None, *, now: datetime
) -> None:
    language = patient.language if patient else "en"
    emergency = emergency_number_for(patient.phone if patient else None, fallback=clinic.emergency_number)
    text = notice(name, language, clinic, emergency_number=emergency)
    _queue_answer(session, message, clinic, patient, None, "notice", {"text": text}, now=now)


def _queue_answer(
    session: Session,
    message: Message,
    clinic: Clinic,
    patient: Patient | None,
    booking: Booking | None,
    template: str,
    context: dict[str, object],
    *,
    now: datetime,
) -> None:
    """One answer per message (its step is the message's id), to the patient — or, for a stranger or a
    staff member, to the number or address they wrote from."""
    row = lifecycle.queue_now(
        session,
        NewRow(
            kind=MessageKind.REPLY,
            clinic_id=id_of(clinic),
            booking_id=booking.id if booking else None,
            patient_id=patient.id if patient else None,
            to_address=None if patient else message.sender,
            step=f"reply-{message.id}",
            channel=Channel(message.channel),
            template=template,
            send_at=now,
            context=dict(context),
        ),
        now=now,
    )
    assert row is not None
    message.auto_reply = f"answer queued as outbox #{row.id}"
    enqueue_after_commit(session, SEND_MESSAGE, row.id)


# --------------------------------------------------------------------------------------------------
# Who wrote, and about which booking
# --------------------------------------------------------------------------------------------------


def _patients(session: Session, clinic: Clinic, message: Message) -> list[Patient]:
    """The clinic's patients the message may be from (several may share a phone or an address). An email
    is from its From address — the one DKIM proves, and people see — else from its envelope sender."""
    if message.channel == Channel.SMS:
        where = col(Patient.phone) == message.sender
    else:
        headers = tuple((name, value) for name, value in message.headers)
        address = _from_address(headers) or message.sender
        where = func.lower(Patient.email) == address.lower()
    return list(session.scalars(select(Patient).where(col(Patient.clinic_id) == clinic.id, where)).all())


def _latest_booking(session: Session, patients: list[Patient], *, now: datetime) -> Booking | None:
    """The booking a reply is about: the most recent treatment that had started, else the next one."""
    if not patients:
        return None
    ids = [p.id for p in patients]
    started = session.scalar(
        select(Booking)
        .where(col(Booking.patient_id).in_(ids), col(Booking.starts_at) <= now)
        .order_by(col(Booking.starts_at).desc())
        .limit(1)
    )
    if started is not None:
        return started
    return session.scalar(
        select(Booking).where(col(Booking.patient_id).in_(ids)).order_by(col(Booking.starts_at)).limit(1)
    )


def _patient_of(booking: Booking | None, patients: list[Patient]) -> Patient | None:
    if booking is not None:
        return next(p for p in patients if p.id == booking.patient_id)
    return patients[0] if patients else None


def _day_since_treatment(booking: Booking | None, now: datetime) -> int | None:
    """Whole days since the end of treatment (0 on the day itself); None before it or without one."""
    if booking is None or now < booking.starts_at:
        return None
    ended = booking.starts_at + timedelta(minutes=booking.duration_minutes)
    return max(0, (now - ended) // timedelta(days=1))


def _answered_recently(session: Session, patient: Patient, *, now: datetime) -> bool:
    answered = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(
            col(Message.patient_id) == patient.id,
            col(Message.auto_reply).is_not(None),
            col(Message.received_at) >= now - timedelta(hours=1),
        )
    )
    return bool(answered and answered >= AUTO_REPLY_CAP_PER_HOUR)
