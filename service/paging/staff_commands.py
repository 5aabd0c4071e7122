"""Texts from a staff member's registered phone: commands, never triaged as a patient's message.

``ACK 4K7P`` (any case, "ack #4k7p", "Ack4K7P") acknowledges the escalation whose page carried that code.
A code is random per escalation (``service.core.escalation.new_ack_code``), and it counts only from an
active staff member of the clinic who was paged for that escalation or whose level is at least the highest
level paged so far (``escalations.may_acknowledge``). A wrong code and one that is not yours get the same
answer, which names no code; after ``MAX_WRONG`` wrong tries from a phone within ``WRONG_WINDOW`` every
ACK from it is refused until the window has passed. Every try is audited with its phone (in the audit
table, never in the logs).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlmodel import Session, col

from service import audit
from service.core.enums import EscalationStatus
from service.core.escalation import read_ack_code
from service.models import AuditEvent, Clinic, StaffMember, id_of
from service.paging.escalations import acknowledge, by_ack_code, may_acknowledge

MAX_WRONG = 5
WRONG_WINDOW = timedelta(minutes=15)
_REFUSED = "escalation.ack_refused"


def staff_member_for(session: Session, clinic_id: int, phone: str) -> StaffMember | None:
    return session.scalar(
        select(StaffMember).where(
            col(StaffMember.clinic_id) == clinic_id,
            col(StaffMember.phone) == phone,
            col(StaffMember.active).is_(True),
        )
    )


def handle(session: Session, clinic: Clinic, staff: StaffMember, text: str, *, now: datetime) -> str:
    """Act on a staff member's text; returns the SMS answer. The caller commits."""
    code = read_ack_code(text)
    if code is None:
        return (
            "Aftercare: this number is registered as staff, so texts here are read as commands. To take a "
            "page, reply ACK and the code it shows, e.g. ACK 4K7P."
        )
    if not code:
        return "Aftercare: reply ACK and the code from your page, e.g. ACK 4K7P."
    subject = f"staff:{staff.id}"
    if _wrong_tries(session, subject, now=now) >= MAX_WRONG:
        _refused(session, clinic, staff, code, "too many wrong codes", now=now)
        return (
            f"Aftercare: too many wrong codes from this phone; try again in {WRONG_WINDOW.seconds // 60} "
            "minutes, or acknowledge in the dashboard (the link is in your page)."
        )
    escalation = by_ack_code(session, id_of(clinic), code)
    if escalation is None or not may_acknowledge(session, escalation, staff):
        # The same words whether the code does not exist or is someone else's: a guess learns nothing.
        _refused(session, clinic, staff, code, "no page of theirs has this code", now=now)
        return f"Aftercare: {code} is not a code from a page of yours. Check the code in your page."
    if acknowledge(session, escalation, by=staff, via="sms", now=now):
        audit.record(
            session, clinic.id, subject, "escalation.ack_by_sms", f"escalation:{escalation.id}", now,
            phone=staff.phone,
        )  # fmt: skip
        return f"Aftercare: {code} acknowledged ({escalation.severity}). Paging stopped; the patient is told."
    who = session.get(StaffMember, escalation.acknowledged_by_id) if escalation.acknowledged_by_id else None
    when = escalation.acknowledged_at or escalation.resolved_at
    state = "resolved" if escalation.status == EscalationStatus.RESOLVED else "acknowledged"
    by = f" by {who.name}" if who else ""
    at = f" at {when:%H:%M} UTC" if when else ""
    return f"Aftercare: {code} was already {state}{by}{at}."


def _wrong_tries(session: Session, subject: str, *, now: datetime) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                col(AuditEvent.action) == _REFUSED,
                col(AuditEvent.subject) == subject,
                col(AuditEvent.at) > now - WRONG_WINDOW,
            )
        )
        or 0
    )


def _refused(
    session: Session, clinic: Clinic, staff: StaffMember, code: str, why: str, *, now: datetime
) -> None:
    audit.record(
        session, clinic.id, f"staff:{staff.id}", _REFUSED, f"staff:{staff.id}", now,
        phone=staff.phone, code=code[:12], why=why,
    )  # fmt: skip
