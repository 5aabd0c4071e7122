"""What a permanent delivery failure means for the patient, and the message that stands in for it.

An infection warning that cannot go by SMS must still reach the patient: it goes by email instead (and an
email that bounces goes by SMS), once per step.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from service import audit
from service.models import MessageStatus, Patient, ScheduledMessage

# Provider codes that say SMS can never reach this number, and what staff should do about it.
UNREACHABLE_CODES = {
    "21211": "the phone number is not valid; correct it",
    "21612": "the number cannot receive SMS from the clinic's number; ask for another number",
    "21614": "the number cannot receive SMS (not a mobile); ask for a mobile number",
    "30006": "the number is a landline; ask for a mobile number",
}
OPTED_OUT_CODES = {"21610"}  # the patient texted STOP to this sender; Twilio blocks until START


def apply_permanent_failure(
    session: Session, row: ScheduledMessage, patient: Patient, *, code: str | None, now: datetime
) -> None:
    """Record on the patient what a permanent code tells us, so later messages do not fail one by one."""
    if row.channel != "sms" or code is None:
        return
    if code in OPTED_OUT_CODES and patient.sms_opted_out_at is None:
        patient.sms_opted_out_at = now
        patient.updated_at = now
        session.add(patient)
        audit.record(
            session,
            patient.clinic_id,
            "worker",
            "patient.sms_opted_out",
            f"patient:{patient.id}",
            now,
            code=code,
        )
    elif code in UNREACHABLE_CODES and patient.sms_unreachable_reason is None:
        patient.sms_unreachable_reason = f"{UNREACHABLE_CODES[code]} (provider code {code})"
        patient.updated_at = now
        session.add(patient)
        audit.record(
            session,
            patient.clinic_id,
            "worker",
            "patient.sms_unreachable",
            f"patient:{patient.id}",
            now,
            code=code,
        )


def add_fallback(
    session: Session, row: ScheduledMessage, patient: Patient, *, now: datetime
) -> ScheduledMessage | None:
    """Queue the same step on the patient's other channel, unless it already has that message."""
    other = "email" if row.channel == "sms" else "sms"
    if other == "email" and (not patient.email or patient.email_opted_out_at is not None):
        return None
    if other == "sms" and (
        not patient.phone
        or not patient.sms_consent
        or patient.sms_opted_out_at is not None
        or patient.sms_unreachable_reason
    ):
        return None
    existing = session.scalar(
        select(ScheduledMessage.id).where(
            ScheduledMessage.booking_id == row.booking_id,
            ScheduledMessage.step == row.step,
            ScheduledMessage.channel == other,
        )
    )
    if existing is not None:
        return None  # the step already goes (or went) on that channel
    fallback = ScheduledMessage(
        clinic_id=row.clinic_id,
        booking_id=row.booking_id,
        patient_id=row.patient_id,
        step=row.step,
        channel=other,
        template=row.template,
        send_at=now,
        status=MessageStatus.SCHEDULED,
        fallback_for_id=row.id,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(fallback)
    except IntegrityError:
        return None  # another process added it first
    return fallback
