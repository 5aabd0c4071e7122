"""A patient's details: found or created when a booking arrives, corrected by staff later."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from service.core.enums import Channel
from service.models import Patient


@dataclass(frozen=True)
class PatientDetails:
    """Who a booking is for. ``phone`` is already E.164 (the API parses it with the clinic's country)."""

    first_name: str
    last_name: str
    phone: str | None
    email: str | None
    timezone: str
    language: str = "en"
    channels: tuple[Channel, ...] = (Channel.SMS, Channel.EMAIL)
    sms_consent: bool = True
    risk_flags: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone": self.phone,
            "email": self.email,
            "timezone": self.timezone,
            "language": self.language,
            "channels": [str(c) for c in self.channels],
            "sms_consent": self.sms_consent,
            "risk_flags": list(self.risk_flags),
        }


# The details staff may correct after booking.
CORRECTABLE = frozenset({"phone", "email", "channels", "language", "timezone"})


@dataclass(frozen=True)
class PatientChanges:
    """Corrections to a patient: only the fields in ``values`` change (``phone`` already E.164)."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.values) - CORRECTABLE
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}; only {sorted(CORRECTABLE)}")


def find_or_create(session: Session, clinic_id: int, details: PatientDetails, *, now: datetime) -> Patient:
    """The same person booking again is the same patient: matched by name and phone (or email)."""
    query = select(Patient).where(
        col(Patient.clinic_id) == clinic_id,
        func.lower(Patient.first_name) == details.first_name.lower(),
        func.lower(Patient.last_name) == details.last_name.lower(),
    )
    if details.phone:
        query = query.where(col(Patient.phone) == details.phone)
    else:
        query = query.where(col(Patient.email) == details.email)
    patient = session.scalars(query.order_by(col(Patient.id))).first()
    if patient is None:
        patient = Patient(clinic_id=clinic_id, created_at=now, **details.fields())
    else:
        for name, value in details.fields().items():
            setattr(patient, name, value)
    patient.updated_at = now
    session.add(patient)
    session.flush()
    return patient


def apply_changes(session: Session, patient: Patient, changes: PatientChanges, *, now: datetime) -> list[str]:
    """Apply corrections; returns the names of the fields that were given. Raises ValueError when the
    result leaves a chosen channel without an address."""
    values = dict(changes.values)
    if "channels" in values:
        values["channels"] = [str(c) for c in values["channels"]]
    if "phone" in values and values["phone"] != patient.phone:
        patient.sms_unreachable_reason = None  # a new number deserves a new try
    for name, value in values.items():
        setattr(patient, name, value)
    if Channel.SMS in patient.channels and not patient.phone:
        raise ValueError("channels includes 'sms' but the patient has no phone")
    if Channel.EMAIL in patient.channels and not patient.email:
        raise ValueError("channels includes 'email' but the patient has no email")
    patient.updated_at = now
    session.add(patient)
    return sorted(values)


def get(session: Session, clinic_id: int, patient_id: int) -> Patient | None:
    """A clinic's patient, or None (another clinic's patient is reported as missing)."""
    patient = session.get(Patient, patient_id)
    return patient if patient is not None and patient.clinic_id == clinic_id else None
