"""Clinics and their staff, as created from the command line."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from functools import cache

from pwdlib import PasswordHash
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from service import audit
from service.core.enums import ALARMING
from service.core.escalation import DEFAULT_ACK_TIMEOUTS
from service.core.phones import EMERGENCY_NUMBERS, parse_phone, region_of
from service.core.quiet_hours import parse_window
from service.models import Clinic, StaffMember, id_of

_passwords = PasswordHash.recommended()  # argon2id


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def clinic_for_api_key(session: Session, key: str) -> Clinic | None:
    return session.scalar(select(Clinic).where(col(Clinic.api_key_hash) == hash_api_key(key)))


class AddressTaken(ValueError):
    """An SMS number or sender address another clinic already has."""


def _check_own(session: Session, *, sms_from: str, email_from: str, clinic_id: int | None = None) -> None:
    """Each SMS number and sender address belongs to one clinic: replies are routed by them, so a second
    clinic on the same one would get the first one's patients' reports."""
    others = select(Clinic).where(col(Clinic.id) != clinic_id) if clinic_id is not None else select(Clinic)
    taken = session.scalar(others.where(col(Clinic.sms_from) == sms_from))
    if taken is not None:
        raise AddressTaken(
            f"the SMS number {sms_from} belongs to clinic {taken.id} ({taken.name}): each number belongs to "
            "one clinic, so its patients' replies reach its staff; use another number"
        )
    taken = session.scalar(others.where(func.lower(Clinic.email_from) == email_from.lower()))
    if taken is not None:
        raise AddressTaken(
            f"the sender address {email_from} belongs to clinic {taken.id} ({taken.name}): each address "
            "belongs to one clinic, so its patients' replies reach its staff; use another address"
        )


def _flush_owned(session: Session, clinic: Clinic) -> None:
    """Flush the clinic; two clinics created at the same moment with one number: the loser is told."""
    try:
        with session.begin_nested():
            session.add(clinic)
            session.flush()
    except IntegrityError:
        _check_own(session, sms_from=clinic.sms_from, email_from=clinic.email_from, clinic_id=clinic.id)
        raise AddressTaken("this SMS number or sender address was just taken by another clinic") from None


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
    timeouts = _checked_timeouts({**DEFAULT_ACK_TIMEOUTS, **(ack_timeouts or {})})
    _check_own(session, sms_from=sms_from, email_from=email_from)
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
    _flush_owned(session, clinic)
    audit.record(session, clinic.id, "cli", "clinic.created", f"clinic:{clinic.id}", now)
    return clinic, api_key


def rotate_api_key(session: Session, clinic: Clinic, *, now: datetime) -> str:
    """A new key for the clinic; the old one stops working at once. Shown once, stored as a hash."""
    api_key = "ac_" + secrets.token_urlsafe(32)
    clinic.api_key_hash = hash_api_key(api_key)
    session.add(clinic)
    audit.record(session, clinic.id, "cli", "clinic.key_rotated", f"clinic:{clinic.id}", now)
    return api_key


def revoke_api_key(session: Session, clinic: Clinic, *, now: datetime) -> None:
    """No key works for the clinic until `rotate-key` makes a new one (a leaked key, a closed clinic)."""
    clinic.api_key_hash = None
    session.add(clinic)
    audit.record(session, clinic.id, "cli", "clinic.key_revoked", f"clinic:{clinic.id}", now)


def _checked_timeouts(timeouts: dict[str, int]) -> dict[str, int]:
    unknown = set(timeouts) - {str(s) for s in ALARMING}
    if unknown:
        raise ValueError(
            f"--ack-timeout takes severities {', '.join(sorted(ALARMING))}, not {', '.join(sorted(unknown))}"
        )
    if any(seconds < 1 for seconds in timeouts.values()):
        raise ValueError("--ack-timeout takes a whole number of seconds of at least 1")
    return timeouts


def update_clinic(
    session: Session,
    clinic: Clinic,
    *,
    now: datetime,
    ack_timeouts: dict[str, int] | None = None,
    quiet_hours: str | None = None,
    emergency_number: str | None = None,
    inbox_reply_within_minutes: int | None = None,
    sms_from: str | None = None,
    email_from: str | None = None,
) -> Clinic:
    """Change a clinic's settings. Escalations already running keep the policy they started with."""
    changed: list[str] = []
    if sms_from is not None or email_from is not None:
        number = parse_phone(sms_from, region="US") if sms_from is not None else clinic.sms_from
        address = email_from if email_from is not None else clinic.email_from
        _check_own(session, sms_from=number, email_from=address, clinic_id=clinic.id)
        if number != clinic.sms_from:
            clinic.sms_from, clinic.country = number, region_of(number)
            changed.append("sms_from")
        if address != clinic.email_from:
            clinic.email_from = address
            changed.append("email_from")
    if ack_timeouts:
        clinic.ack_timeouts = _checked_timeouts({**clinic.ack_timeouts, **ack_timeouts})
        changed.append("ack_timeouts")
    if quiet_hours is not None:
        start, end = parse_window(quiet_hours)
        clinic.quiet_start, clinic.quiet_end = start.strftime("%H:%M"), end.strftime("%H:%M")
        changed.append("quiet_hours")
    if emergency_number is not None:
        clinic.emergency_number = emergency_number
        changed.append("emergency_number")
    if inbox_reply_within_minutes is not None:
        if inbox_reply_within_minutes < 1:
            raise ValueError("--reply-within takes a whole number of minutes of at least 1")
        clinic.inbox_reply_within_minutes = inbox_reply_within_minutes
        changed.append("inbox_reply_within_minutes")
    _flush_owned(session, clinic)
    audit.record(session, clinic.id, "cli", "clinic.updated", f"clinic:{clinic.id}", now, fields=changed)
    return clinic


def clinics_without_first_level(session: Session) -> list[Clinic]:
    """Clinics whose emergencies would page nobody: no active staff at all (level 1 is whoever is lowest)."""
    staffed = select(col(StaffMember.clinic_id)).where(col(StaffMember.active).is_(True))
    return list(
        session.scalars(select(Clinic).where(col(Clinic.id).not_in(staffed)).order_by(col(Clinic.id)))
    )


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
    if level < 1:
        raise ValueError("--level is 1 or more (1 is paged first)")
    if password is not None and len(password) < 10:
        raise ValueError("a dashboard password needs at least 10 characters")
    member = StaffMember(
        clinic_id=id_of(clinic),
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
    if not member.password_hash:
        return False
    return _passwords.verify(password, member.password_hash)


@cache
def _dummy_hash() -> str:
    """Checked when the email matches nobody, so a login takes as long whether or not the address exists."""
    return _passwords.hash(secrets.token_urlsafe(16))


def authenticate(session: Session, email: str, password: str) -> StaffMember | None:
    """The active staff member with this email and password, or None (without saying which was wrong)."""
    members = session.scalars(
        select(StaffMember).where(
            func.lower(StaffMember.email) == email.strip().lower(),
            col(StaffMember.active).is_(True),
            col(StaffMember.password_hash).is_not(None),
        )
    ).all()
    for member in members:
        if verify_password(member, password):
            return member
    if not members:
        _passwords.verify(password, _dummy_hash())
    return None
