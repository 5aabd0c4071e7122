"""A patient's consent and reachability: opting out and back in, per channel, and what a provider told us
about an address. Every change is audited; nothing here sends anything."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col

from service import audit
from service.core.enums import Channel, RecipientProblem
from service.models import Patient
from service.patients.links import patient_from_unsubscribe_token
from service.settings import Settings


def opt_out_of_email(session: Session, patient: Patient, *, now: datetime, actor: str = "patient") -> None:
    """No more scheduled email to this patient (answers to their own messages still go)."""
    if patient.email_opted_out_at is None:
        patient.email_opted_out_at = now
        patient.updated_at = now
        session.add(patient)
        audit.record(
            session, patient.clinic_id, actor, "patient.email_opted_out", f"patient:{patient.id}", now
        )


def set_sms_opt_out(session: Session, clinic_id: int, phone: str, *, opted_out: bool, now: datetime) -> None:
    """STOP and START apply to the phone number, as the carrier applies them: every patient on it."""
    session.execute(
        update(Patient)
        .where(
            col(Patient.clinic_id) == clinic_id,
            col(Patient.phone) == phone,
            # A repeated STOP keeps the first opt-out time.
            col(Patient.sms_opted_out_at).is_(None)
            if opted_out
            else col(Patient.sms_opted_out_at).is_not(None),
        )
        .values(sms_opted_out_at=now if opted_out else None, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    action = "patient.sms_opted_out" if opted_out else "patient.sms_opted_in"
    audit.record(session, clinic_id, "patient", action, f"phone:…{phone[-4:]}", now)


def record_recipient_problem(
    session: Session, patient: Patient, channel: Channel, problem: RecipientProblem, *, now: datetime
) -> None:
    """Remember what a permanent failure says about the patient's SMS number, so later messages fall back
    at once instead of failing one by one. (An email address that bounces is left for staff to correct.)"""
    if channel != Channel.SMS:
        return
    if problem is RecipientProblem.OPTED_OUT:
        if patient.sms_opted_out_at is None:
            patient.sms_opted_out_at = now
            action = "patient.sms_opted_out"
        else:
            return
    elif patient.sms_unreachable_reason is None:
        patient.sms_unreachable_reason = problem.advice
        action = "patient.sms_unreachable"
    else:
        return
    patient.updated_at = now
    session.add(patient)
    audit.record(
        session, patient.clinic_id, "worker", action, f"patient:{patient.id}", now, problem=problem.value
    )


def patient_for_link(session: Session, token: str, *, settings: Settings) -> Patient | None:
    """The patient an unsubscribe link is for; None when we did not make it. Raises LinkExpired."""
    patient_id = patient_from_unsubscribe_token(token, settings)
    return session.get(Patient, patient_id) if patient_id is not None else None


def unsubscribe_email(session: Session, token: str, *, settings: Settings, now: datetime) -> bool:
    """Act on an unsubscribe link; False when the link was not made by us (or its patient is gone).
    Raises LinkExpired."""
    patient = patient_for_link(session, token, settings=settings)
    if patient is None:
        return False
    opt_out_of_email(session, patient, now=now)
    return True
