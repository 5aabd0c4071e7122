"""Patient replies: store each once, honour compliance keywords, triage, and decide our answer.

A reply that reports something a clinician should see today opens an escalation (``service.paging``);
routine ones, and those from unknown or shared phones, wait in the staff inbox. Texts from a staff
member's phone are commands, never triaged. Every answer is decided here; the webhook only turns it into
the channel's answer (TwiML for SMS) and the outbox carries email answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from service import audit
from service.celery import FETCH_MEDIA, SEND_MESSAGE, enqueue_after_commit
from service.channels.base import InboundMessage
from service.core.enums import ALARMING, Channel, InboxState, Keyword, MessageKind, Severity
from service.core.phones import display_phone, emergency_number_for
from service.models import Booking, Clinic, Message, Patient, id_of
from service.outbox import lifecycle
from service.outbox.lifecycle import NewRow
from service.paging.escalations import has_first_level, open_for_message
from service.paging.staff_commands import handle, staff_member_for
from service.patients.consent import opt_out_of_email, set_sms_opt_out
from service.rendering import render
from service.replies.answers import answer_for, notice
from service.triage import Lexicon, TriageResult, compliance_keyword, triage

log = logging.getLogger(__name__)

# Replies within this window are read together: "I have" … "pus" is one report.
BURST_WINDOW = timedelta(minutes=5)
# At most this many automatic routine answers per patient per hour, so two robots cannot talk forever;
# urgent and emergency replies are always answered.
AUTO_REPLY_CAP_PER_HOUR = 3


@dataclass(frozen=True)
class Received:
    message: Message | None  # None: the message was for no clinic of ours, and is not kept
    reply: str | None  # the SMS answer (TwiML); email answers go through the outbox
    duplicate: bool = False


def receive(session: Session, inbound: InboundMessage, *, now: datetime, lexicon: Lexicon) -> Received:
    """Store, understand and answer one inbound message. Posting the same provider id again changes
    nothing and gives the same answer. The caller commits."""
    clinic, patients = _match(session, inbound)
    if clinic is None:
        # Not one of our numbers or addresses: nobody here could act on it, so it is not kept.
        log.info("an inbound %s for no clinic of ours was dropped", inbound.channel)
        return Received(None, None)
    existing = _stored(session, id_of(clinic), inbound)
    if existing is not None:
        return Received(existing, existing.auto_reply, duplicate=True)

    booking = _latest_booking(session, patients, now=now)
    patient = _patient_of(booking, patients)
    message = Message(
        clinic_id=id_of(clinic),
        patient_id=patient.id if patient else None,
        booking_id=booking.id if booking else None,
        channel=inbound.channel,
        provider_id=inbound.provider_id,
        sender=inbound.sender,
        recipient=inbound.recipient,
        body=inbound.body,
        media=[dict(m) for m in inbound.media],
        received_at=now,
        ambiguous_patient=len({p.id for p in patients}) > 1,
        sender_verified=inbound.sender_verified,
    )
    reply = _understand(
        session, message, inbound, clinic, patients, patient, booking, now=now, lexicon=lexicon
    )
    message.auto_reply = reply
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        # The same message posted twice at the same moment: the other request stored it first.
        stored = _stored(session, id_of(clinic), inbound)
        assert stored is not None
        return Received(stored, stored.auto_reply, duplicate=True)
    audit.record(
        session, clinic.id, inbound.channel, "message.received", f"message:{message.id}", now,
        severity=message.severity, keyword=message.keyword,
    )  # fmt: skip
    if message.staff_member_id is None and message.severity in ALARMING:
        # Stored once (the insert above succeeded), so a provider's retry never opens a second escalation.
        open_for_message(
            session, clinic=clinic, patient=patient, booking=booking, message=message,
            severity=message.severity, now=now,
        )  # fmt: skip
    message.inbox_state = _inbox_state(message, inbound, clinic)
    if message.media:
        enqueue_after_commit(session, FETCH_MEDIA, message.id)  # kept by us, then deleted at the provider
    if (
        inbound.channel == Channel.EMAIL
        and not inbound.automatic
        and patient is not None
        and booking is not None
    ):
        _queue_email_answer(session, message, patient, booking, clinic, now=now)
    return Received(message, reply)


def _inbox_state(message: Message, inbound: InboundMessage, clinic: Clinic) -> InboxState | None:
    """Routine replies, and anything from an unknown or unverified sender or a phone several patients
    share, wait in the staff inbox for a person to answer. Urgent and emergency ones are escalations."""
    if inbound.automatic or message.staff_member_id is not None or message.severity in ALARMING:
        return None
    if message.patient_id is None or message.ambiguous_patient or not message.sender_verified:
        return InboxState.NEEDS_REPLY
    if message.severity == Severity.ROUTINE:
        return InboxState.NEEDS_REPLY
    return None


def _understand(
    session: Session,
    message: Message,
    inbound: InboundMessage,
    clinic: Clinic,
    patients: list[Patient],
    patient: Patient | None,
    booking: Booking | None,
    *,
    now: datetime,
    lexicon: Lexicon,
) -> str | None:
    """Fill in the message's keyword and triage; return the SMS answer (None: answer nothing)."""
    language = patient.language if patient else "en"
    keyword = compliance_keyword(inbound.new_text) if inbound.channel == Channel.SMS else None
    staff = (
        staff_member_for(session, id_of(clinic), inbound.sender) if inbound.channel == Channel.SMS else None
    )
    if staff is not None and keyword is None:
        # A staff member's phone: a command ("ACK 42"), never read as a patient's symptoms.
        message.staff_member_id = staff.id
        message.triage_text = ""
        return handle(session, clinic, staff, inbound.new_text, now=now)
    if keyword is not None:
        message.keyword = keyword
        message.triage_text = inbound.new_text
        if keyword == Keyword.STOP:
            set_sms_opt_out(session, id_of(clinic), inbound.sender, opted_out=True, now=now)
            return None  # Twilio confirms the STOP itself; a second text would annoy
        if keyword == Keyword.START:
            set_sms_opt_out(session, id_of(clinic), inbound.sender, opted_out=False, now=now)
            return None
        return notice("help", language, clinic, emergency_number=_emergency_number(patient, clinic))
    if inbound.automatic:
        message.triage_text = ""
        return None

    text = _with_recent(session, inbound, patient, now=now)
    day = _day_since_treatment(booking, now)
    result = triage(
        text,
        day=day,
        lexicon=lexicon,
        treatment=booking.treatment if booking else None,
        risk_flags=patient.risk_flags if patient else (),  # eczema + blisters, blood thinners + bleeding, …
    )
    _record_triage(message, lexicon.strip_quoted(text), result)
    if result.keyword == Keyword.STOP and not inbound.sender_verified:
        # Anyone can write a From header: an unverified email never switches off a patient's warnings. It
        # stays in the staff inbox, marked, for a person to act on.
        log.warning("message from an unverified email sender asked to opt out; left for staff")
    elif result.keyword == Keyword.STOP:
        # A plain-language opt-out: honoured, and any symptoms in it are still triaged and answered.
        if inbound.channel == Channel.SMS:
            set_sms_opt_out(session, id_of(clinic), inbound.sender, opted_out=True, now=now)
        else:
            for each in patients:
                opt_out_of_email(session, each, now=now)
    if inbound.channel != Channel.SMS:
        return None  # email is answered by email, through the outbox (_queue_email_answer)
    if not patients:
        return notice("unknown_sender", language, clinic)
    assert patient is not None
    if result.severity not in ALARMING:
        if result.keyword == Keyword.STOP:
            return notice("opted_out", language, clinic)
        if result.severity == Severity.NONE or _answered_recently(session, patient, now=now):
            return None
    return _answer_text(session, text, result, patient, booking, clinic)


def _emergency_number(patient: Patient | None, clinic: Clinic) -> str:
    """The patient's country's emergency number (a Madrid patient of a New York clinic: 112)."""
    return emergency_number_for(patient.phone if patient else None, fallback=clinic.emergency_number)


def _record_triage(message: Message, text: str, result: TriageResult) -> None:
    message.triage_text = text
    message.severity = Severity(result.severity)
    message.keyword = Keyword(result.keyword) if result.keyword else None
    message.findings = result.to_json()["findings"]


def _answer_text(
    session: Session,
    text: str,
    result: TriageResult,
    patient: Patient,
    booking: Booking | None,
    clinic: Clinic,
) -> str:
    """Our SMS answer, in the patient's language; a routine one carries the care plan's answer if any.
    "We have alerted the clinic" is said only when someone will be paged."""
    context = {
        "staff_paged": has_first_level(session, clinic),
        "first_name": patient.first_name,
        "clinic_name": clinic.name,
        "clinic_phone": display_phone(clinic.sms_from),
        "emergency_number": _emergency_number(patient, clinic),
        "treatment": booking.treatment if booking else "microneedling",
        "include_stop_notice": False,
        "answer": (answer_for(text, patient.language, clinic) or "")
        if result.severity == Severity.ROUTINE
        else "",
    }
    return render(f"reply_{result.severity}", Channel.SMS, patient.language, context).body


def _queue_email_answer(
    session: Session, message: Message, patient: Patient, booking: Booking, clinic: Clinic, *, now: datetime
) -> None:
    """Email answers go through the outbox, queued at once so they leave within seconds (and are still
    swept if the enqueue is lost). Never to an automatic email, never for "none"."""
    if message.severity == Severity.NONE or message.keyword is not None and message.severity not in ALARMING:
        return
    if message.severity not in ALARMING and _answered_recently(session, patient, now=now):
        return
    answer = (
        answer_for(message.triage_text, patient.language, clinic)
        if message.severity == Severity.ROUTINE
        else None
    )
    session.flush()
    row = lifecycle.queue_now(
        session,
        NewRow(
            kind=MessageKind.REPLY,
            clinic_id=message.clinic_id,
            booking_id=booking.id,
            patient_id=patient.id,
            step=f"reply-{message.id}",
            channel=Channel.EMAIL,
            template=f"reply_{message.severity}",
            send_at=now,
            context={"answer": answer or "", "staff_paged": has_first_level(session, clinic)},
        ),
        now=now,
    )
    assert row is not None
    message.auto_reply = f"email answer queued as outbox #{row.id}"
    enqueue_after_commit(session, SEND_MESSAGE, row.id)


def _stored(session: Session, clinic_id: int, inbound: InboundMessage) -> Message | None:
    return session.scalar(
        select(Message).where(
            col(Message.clinic_id) == clinic_id,
            col(Message.channel) == inbound.channel,
            col(Message.provider_id) == inbound.provider_id,
        )
    )


def _match(session: Session, inbound: InboundMessage) -> tuple[Clinic | None, list[Patient]]:
    """The clinic the message was sent to, and the patients it may be from (several may share a phone)."""
    if inbound.channel == Channel.SMS:
        clinic = session.scalar(select(Clinic).where(col(Clinic.sms_from) == inbound.recipient))
        if clinic is None:
            return None, []
        patients = session.scalars(
            select(Patient).where(col(Patient.clinic_id) == clinic.id, col(Patient.phone) == inbound.sender)
        ).all()
        return clinic, list(patients)
    patients = list(
        session.scalars(select(Patient).where(func.lower(Patient.email) == inbound.sender.lower())).all()
    )
    clinic = session.scalar(select(Clinic).where(func.lower(Clinic.email_from) == inbound.recipient.lower()))
    if clinic is not None:
        patients = [p for p in patients if p.clinic_id == clinic.id]
    elif patients and inbound.sender_verified:
        # Forwarded from an address that is not the clinic's: the sender's own clinic, but only when the
        # provider vouches for the sender — a forged From must not steer a message to a clinic.
        clinic = session.get(Clinic, patients[0].clinic_id)
        patients = [p for p in patients if p.clinic_id == patients[0].clinic_id]
    return clinic, patients


def _latest_booking(session: Session, patients: list[Patient], *, now: datetime) -> Booking | None:
    """The booking a reply is about: the most recent treatment that has started, else the next one."""
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
    if booking is None:
        return None
    ended = booking.starts_at + timedelta(minutes=booking.duration_minutes)
    if now < booking.starts_at:
        return None
    return max(0, (now - ended) // timedelta(days=1))


def _with_recent(session: Session, inbound: InboundMessage, patient: Patient | None, *, now: datetime) -> str:
    """This message read together with the patient's other messages of the last few minutes."""
    if patient is None or inbound.channel != Channel.SMS:
        return inbound.new_text
    earlier = session.scalars(
        select(col(Message.body))
        .where(
            col(Message.patient_id) == patient.id,
            col(Message.channel) == Channel.SMS,
            col(Message.keyword).is_(None),
            col(Message.received_at) >= now - BURST_WINDOW,
        )
        .order_by(col(Message.received_at), col(Message.id))
    ).all()
    # Sentences end between messages, so "no pus" then "fever" is not read as "no pus fever".
    return ". ".join([*earlier, inbound.new_text])


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
