"""Texts from a staff member's registered phone: commands, never triaged as a patient's message.

``ACK 42`` (any case, "ack #42", "Ack42") acknowledges escalation 42 of the clinic the text was sent to;
the code is accepted only from that clinic's staff phones. Anything else gets a short help answer that
lists what is open, so a clinician paged at night never has to guess.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from service.core.enums import EscalationStatus
from service.models import Clinic, Escalation, StaffMember, id_of
from service.paging.escalations import acknowledge, by_ack_code

_ACK = re.compile(r"^\W*ack\W*#?\s*(\d{1,9})\W*$", re.IGNORECASE)
_ACK_WORD = re.compile(r"^\W*ack\b", re.IGNORECASE)


def staff_member_for(session: Session, clinic_id: int, phone: str) -> StaffMember | None:
    return session.scalar(
        select(StaffMember).where(
            col(StaffMember.clinic_id) == clinic_id,
            col(StaffMember.phone) == phone,
            col(StaffMember.active).is_(True),
        )
    )


def _open_codes(session: Session, clinic_id: int) -> str:
    codes = session.scalars(
        select(col(Escalation.ack_code))
        .where(col(Escalation.clinic_id) == clinic_id, col(Escalation.status) == EscalationStatus.OPEN)
        .order_by(col(Escalation.ack_code))
        .limit(5)
    ).all()
    return ", ".join(str(c) for c in codes) if codes else "none"


def handle(session: Session, clinic: Clinic, staff: StaffMember, text: str, *, now: datetime) -> str:
    """Act on a staff member's text; returns the SMS answer. The caller commits."""
    found = _ACK.match(text.strip())
    open_now = f"Open now: {_open_codes(session, id_of(clinic))}."
    if found is None:
        if _ACK_WORD.match(text):
            return f"Aftercare: reply ACK and the code, e.g. ACK 42. {open_now}"
        return (
            "Aftercare: this number is registered as staff, so texts here are read as commands. Reply ACK "
            f"and the code from a page. {open_now}"
        )
    code = int(found.group(1))
    escalation = by_ack_code(session, id_of(clinic), code)
    if escalation is None:
        return f"Aftercare: no escalation {code} at {clinic.name}. {open_now}"
    if acknowledge(session, escalation, by=staff, via="sms", now=now):
        return f"Aftercare: {code} acknowledged ({escalation.severity}). Paging stopped; the patient is told."
    who = session.get(StaffMember, escalation.acknowledged_by_id) if escalation.acknowledged_by_id else None
    when = escalation.acknowledged_at or escalation.resolved_at
    state = "resolved" if escalation.status == EscalationStatus.RESOLVED else "acknowledged"
    by = f" by {who.name}" if who else ""
    at = f" at {when:%H:%M} UTC" if when else ""
    return f"Aftercare: {code} was already {state}{by}{at}. {open_now}"
