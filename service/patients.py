"""Patients' consent to be contacted: opting out and back in, per channel, always audited."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session

from service import audit
from service.models import Patient


def opt_out_of_email(session: Session, patient: Patient, *, now: datetime) -> None:
    """No more scheduled email to this patient (answers to their own messages still go)."""
    if patient.email_opted_out_at is None:
        patient.email_opted_out_at = now
        patient.updated_at = now
        session.add(patient)
        audit.record(
            session, patient.clinic_id, "patient", "patient.email_opted_out", f"patient:{patient.id}", now
        )


def set_sms_opt_out(session: Session, clinic_id: int, phone: str, *, opted_out: bool, now: datetime) -> None:
    """STOP and START apply to the phone number, as the carrier applies them: every patient on it."""
    session.execute(
        update(Patient)
        .where(
            Patient.clinic_id == clinic_id,
            Patient.phone == phone,
            # A repeated STOP keeps the first opt-out time.
            Patient.sms_opted_out_at.is_(None) if opted_out else Patient.sms_opted_out_at.is_not(None),  # type: ignore[union-attr]
        )
        .values(sms_opted_out_at=now if opted_out else None, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    action = "patient.sms_opted_out" if opted_out else "patient.sms_opted_in"
    audit.record(session, clinic_id, "patient", action, f"phone:…{phone[-4:]}", now)
