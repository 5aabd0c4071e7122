"""Clinics and their staff, as created from the command line."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from pwdlib import PasswordHash
from sqlalchemy import select
from sqlmodel import Session

from service import audit
from service.core.enums import ALARMING, Severity
from service.core.phones import EMERGENCY_NUMBERS, parse_phone, region_of
from service.core.quiet_hours import parse_window
from service.models import Clinic, StaffMember

_passwords = PasswordHash.recommended()  # argon2id

DEFAULT_ACK_TIMEOUTS = {Severity.EMERGENCY.value: 300, Severity.URGENT.value: 900}


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def clinic_for_api_key(session: Session, key: str) -> Clinic | None:
    return session.scalar(select(Clinic).where(Clinic.api_key_hash == hash_api_key(key)))


def create_clinic(
    session: Session,
    *,
    name: str,
    timezone: str,
    sms_from: str,
    email_from: str,
    now: datetime,
    quiet_hours: str = "21:00-08:00",
    emergency_number: str | None = None,
    ack_timeouts: dict[str, int] | None = None,
) -> tuple[Clinic, str]:
    """Create a clinic; returns it with its API key, which is shown once and stored only as a hash."""
    sms_from = parse_phone(sms_from, region="US")
    start, end = parse_window(quiet_hours)
    country = region_of(sms_from)
    timeouts = {**DEFAULT_ACK_TIMEOUTS, **(ack_timeouts or {})}
    unknown = set(timeouts) - {str(s) for s in ALARMING}
    if unknown:
        raise ValueError(
            f"--ack-timeout takes severities {', '.join(sorted(ALARMING))}, not {', '.join(sorted(unknown))}"
        )
    api_key = "ac_" + secrets.token_urlsafe(32)
    clinic = Clinic(
        name=name,
        timezone=timezone,
        sms_from=sms_from,
        email_from=email_from,
        country=country,
        emergency_number=emergency_number or EMERGENCY_NUMBERS.get(country, "112"),
        quiet_start=start.strftime("%H:%M"),
        quiet_end=end.strftime("%H:%M"),
        api_key_hash=hash_api_key(api_key),
        ack_timeouts=timeouts,
        created_at=now,
    )
    session.add(clinic)
    session.flush()
    audit.record(session, clinic.id, "cli", "clinic.created", f"clinic:{clinic.id}", now)
    return clinic, api_key


def add_staff(
    session: Session,
    *,
    clinic: Clinic,
    name: str,
    phone: str,
    email: str,
    level: int,
    now: datetime,
    role: str = "clinician",
    password: str | None = None,
) -> StaffMember:
    member = StaffMember(
        clinic_id=clinic.id,  # type: ignore[arg-type]
        name=name,
        phone=parse_phone(phone, region=clinic.country),
        email=email,
        role=role,
        level=level,
        password_hash=_passwords.hash(password) if password else None,
        created_at=now,
    )
    session.add(member)
    session.flush()
    audit.record(session, clinic.id, "cli", "staff.added", f"staff:{member.id}", now, level=level)
    return member


def verify_password(member: StaffMember, password: str) -> bool:
    return bool(member.password_hash) and _passwords.verify(password, member.password_hash)  # type: ignore[arg-type]
