"""Pages: one staff member, one channel, one round of an escalation. A page goes at any hour, in English,
to a staff member who is still active; one that fails or is held back moves paging on to the next level at
once instead of waiting out the round (docs/architecture.md#paging)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, exists, select
from sqlmodel import Session, col

from service.celery import PAGE_FAILED, enqueue_after_commit
from service.core.enums import Channel, MessageKind, RecipientProblem
from service.models import Escalation, EscalationStep, Message, Patient, ScheduledMessage, StaffMember
from service.outbox.purpose import Address, Parties
from service.patients.messages import clinic_context
from service.settings import Settings


class Page:
    kind = MessageKind.PAGE

    def recipient(self, session: Session, parties: Parties) -> str | None:
        staff = _staff(session, parties.row)
        return _address_of(staff, parties.row) if staff is not None else None

    def address(self, session: Session, parties: Parties, settings: Settings) -> Address | str:
        staff = _staff(session, parties.row)
        if staff is None or not staff.active:
            return "the staff member is no longer active"
        to = _address_of(staff, parties.row)
        if not to:
            return "no address for this page"
        context = clinic_context(parties)
        context.update(_what_the_page_says(session, parties.row, settings.PUBLIC_BASE_URL.rstrip("/")))
        return Address(to=to, language="en", context=context)

    def may_go(self) -> Sequence[ColumnElement[bool]]:
        return _staff_still_active()

    def after_failure(
        self, session: Session, row: ScheduledMessage, *, problem: RecipientProblem | None, now: datetime
    ) -> None:
        enqueue_after_commit(session, PAGE_FAILED, row.id)  # the next level, at once

    def after_suppressed(self, session: Session, parties: Parties, *, now: datetime) -> None:
        # Nobody reads a page that never goes: the next level is paged at once, as for a failed page.
        enqueue_after_commit(session, PAGE_FAILED, parties.row.id)


def _address_of(staff: StaffMember, row: ScheduledMessage) -> str | None:
    return staff.phone if row.channel == Channel.SMS else staff.email


def _staff(session: Session, row: ScheduledMessage) -> StaffMember | None:
    return session.get(StaffMember, row.staff_member_id) if row.staff_member_id is not None else None


@cache
def _staff_still_active() -> tuple[ColumnElement[bool], ...]:
    """A staff member deactivated a moment before the send is not paged (the next level is)."""
    return (
        exists().where(
            col(StaffMember.id) == col(ScheduledMessage.staff_member_id), col(StaffMember.active).is_(True)
        ),
    )


def _what_the_page_says(session: Session, row: ScheduledMessage, base_url: str) -> dict[str, Any]:
    """The SMS carries no clinical words (initials, severity, code, link); the email, which staff read
    signed in, carries the messages and what triage found."""
    escalation = session.get(Escalation, row.escalation_id)
    step = session.get(EscalationStep, row.escalation_step_id)
    assert escalation is not None and step is not None, "a page belongs to an escalation step"
    patient = session.get(Patient, escalation.patient_id) if escalation.patient_id else None
    messages = session.scalars(
        select(Message).where(col(Message.escalation_id) == escalation.id).order_by(col(Message.received_at))
    ).all()
    return {
        "severity": str(escalation.severity),
        "ack_code": escalation.ack_code,
        "initials": patient.initials if patient else "?",
        "patient_name": f"{patient.first_name} {patient.last_name}" if patient else "an unknown sender",
        "alert_title": escalation.title,
        "step_number": step.number,
        "reason": step.reason,
        "dashboard_url": f"{base_url}/dashboard/escalations/{escalation.id}",
        "unverified_sender": any(not m.sender_verified for m in messages),
        "messages": [
            {
                "received": f"{m.received_at:%Y-%m-%d %H:%M} UTC",
                "text": m.triage_text or m.body,
                # Anyone can write a From header: the page says when the sender is not proven.
                "unverified": not m.sender_verified,
                "automatic": m.automatic,
                "findings": [
                    f["concept"]
                    for f in m.findings
                    if not (f["negated"] or f["hypothetical"] or f["historical"])
                ],
            }
            for m in messages
        ],
    }
