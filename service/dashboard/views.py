"""Read models for the dashboard: plain values the templates show, one query set per page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session, col

from service.core.enums import BookingStatus, Channel, EscalationStatus, InboundState, MessageKind
from service.core.plans import expand_plan
from service.core.quiet_hours import QuietHours
from service.models import (
    Booking,
    Clinic,
    Escalation,
    Media,
    Message,
    Patient,
    ScheduledMessage,
    StaffMember,
    id_of,
)
from service.paging import queries as paging
from service.replies import inbox
from service.scheduling.care_plans import load_plan


@dataclass(frozen=True)
class PageView:
    staff: str
    level: int
    channel: str
    status: str
    at: datetime
    error: str | None


@dataclass(frozen=True)
class EscalationView:
    id: int
    ack_code: str
    severity: str
    status: str
    patient_id: int | None
    who: str  # the patient's name, or what a clinic alert is about
    opened_at: datetime
    age_minutes: int
    level: int | None
    acknowledged: str | None  # "Dan Doctor by sms at 10:05"
    resolved: str | None
    note: str | None
    pages: list[PageView] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


def _staff_names(session: Session, clinic_id: int) -> dict[int, StaffMember]:
    staff = session.scalars(select(StaffMember).where(col(StaffMember.clinic_id) == clinic_id)).all()
    return {id_of(s): s for s in staff}


def _escalation_view(
    session: Session, escalation: Escalation, staff: dict[int, StaffMember], *, now: datetime, full: bool
) -> EscalationView:
    patient = session.get(Patient, escalation.patient_id) if escalation.patient_id else None
    who = f"{patient.first_name} {patient.last_name}" if patient else (escalation.title or "unknown sender")
    acked = None
    if escalation.acknowledged_at:
        by = staff.get(escalation.acknowledged_by_id or -1)
        when = f"{escalation.acknowledged_at:%H:%M} UTC"
        acked = f"{by.name if by else 'the API'} by {escalation.acknowledged_via} at {when}"
    resolved = None
    if escalation.resolved_at:
        by = staff.get(escalation.resolved_by_id or -1)
        resolved = f"{by.name if by else 'the API'} at {escalation.resolved_at:%H:%M} UTC"
    pages = [
        PageView(
            staff=staff[row.staff_member_id].name if row.staff_member_id in staff else "?",
            level=staff[row.staff_member_id].level if row.staff_member_id in staff else 0,
            channel=str(row.channel),
            status=str(row.status),
            at=row.sent_at or row.updated_at,
            error=row.last_error,
        )
        for row in paging.pages_of(session, id_of(escalation))
    ]
    return EscalationView(
        id=id_of(escalation),
        ack_code=escalation.ack_code,
        severity=str(escalation.severity),
        status=str(escalation.status),
        patient_id=escalation.patient_id,
        who=who,
        opened_at=escalation.created_at,
        age_minutes=int((now - escalation.created_at).total_seconds() // 60),
        level=paging.current_level(session, escalation),
        acknowledged=acked,
        resolved=resolved,
        note=escalation.resolution_note,
        pages=pages,
        messages=paging.messages_of(session, id_of(escalation)) if full else [],
    )


def queue(session: Session, clinic_id: int, *, now: datetime) -> list[EscalationView]:
    """Open escalations first (most serious, then oldest), then those acknowledged but not resolved."""
    staff = _staff_names(session, clinic_id)
    rows = [
        *paging.clinic_escalations(session, clinic_id, status=EscalationStatus.OPEN, limit=200),
        *paging.clinic_escalations(session, clinic_id, status=EscalationStatus.ACKNOWLEDGED, limit=200),
    ]
    return [_escalation_view(session, row, staff, now=now, full=False) for row in rows]


def escalation(session: Session, escalation: Escalation, *, now: datetime) -> EscalationView:
    return _escalation_view(
        session, escalation, _staff_names(session, escalation.clinic_id), now=now, full=True
    )


@dataclass(frozen=True)
class InboxItem:
    message: Message
    who: str
    reply_by: datetime
    overdue: bool
    flags: list[str]


def marks(message: Message) -> list[str]:
    """What staff must know about where a message came from before acting on it."""
    found = []
    if message.state == InboundState.FAILED:
        found.append("could not be processed")
    elif message.state == InboundState.RECEIVED:
        found.append("not yet processed")
    if not message.sender_verified:
        found.append("unverified sender")
    if message.automatic:
        found.append("automatic email")
    return found


def inbox_items(session: Session, clinic: Clinic, *, now: datetime) -> list[InboxItem]:
    items = []
    within = timedelta(minutes=clinic.inbox_reply_within_minutes)
    for message in inbox.waiting(session, id_of(clinic)):
        patient = session.get(Patient, message.patient_id) if message.patient_id else None
        flags = marks(message)
        if patient is None:
            flags.append("unknown sender")
        if message.ambiguous_patient:
            flags.append("phone shared by several patients")
        reply_by = message.received_at + within
        items.append(
            InboxItem(
                message=message,
                who=f"{patient.first_name} {patient.last_name}" if patient else message.sender,
                reply_by=reply_by,
                overdue=now > reply_by,
                flags=flags,
            )
        )
    return items


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    kind: str  # "outbound", "inbound", "escalation"
    title: str
    status: str | None = None
    detail: str | None = None
    answer: str | None = None  # the answer the inbound worker queued, when it did
    findings: list[dict[str, object]] = field(default_factory=list)
    media_ids: list[int] = field(default_factory=list)
    escalation_id: int | None = None


def timeline(session: Session, patient: Patient) -> list[TimelineEvent]:
    """Everything that happened to one patient, newest first: messages out, messages in, escalations."""
    events: list[TimelineEvent] = []
    outbound = session.scalars(
        select(ScheduledMessage).where(col(ScheduledMessage.patient_id) == patient.id)
    ).all()
    for row in outbound:
        label = {MessageKind.REPLY: "answer", MessageKind.STAFF_REPLY: "staff answer"}.get(row.kind, row.step)
        events.append(
            TimelineEvent(
                at=row.sent_at or row.send_at,
                kind="outbound",
                title=f"{label} by {row.channel}",
                status=str(row.status),
                detail=row.last_error if row.status in ("failed", "undelivered", "suppressed") else None,
            )
        )
    inbound = session.scalars(select(Message).where(col(Message.patient_id) == patient.id)).all()
    for message in inbound:
        media = session.scalars(
            select(col(Media.id)).where(col(Media.message_id) == message.id, col(Media.purged_at).is_(None))
        ).all()
        events.append(
            TimelineEvent(
                at=message.received_at,
                kind="inbound",
                title=" · ".join([f"{message.channel} from the patient", *marks(message)]),
                status=str(message.severity),
                detail=message.body,
                answer=message.auto_reply,
                findings=message.findings,
                media_ids=[media_id for media_id in media if media_id is not None],  # never None: narrows
                escalation_id=message.escalation_id,
            )
        )
    for item in session.scalars(select(Escalation).where(col(Escalation.patient_id) == patient.id)).all():
        events.append(
            TimelineEvent(
                at=item.created_at,
                kind="escalation",
                title=f"escalation {item.ack_code} ({item.severity})",
                status=str(item.status),
                detail=item.resolution_note,
                escalation_id=item.id,
            )
        )
    return sorted(events, key=lambda e: e.at, reverse=True)


def upcoming(
    session: Session, clinic_id: int, *, now: datetime, days: int = 14
) -> list[tuple[Booking, Patient]]:
    rows = session.execute(
        select(Booking, Patient)
        .join(Patient, col(Patient.id) == Booking.patient_id)
        .where(
            col(Booking.clinic_id) == clinic_id,
            col(Booking.status) == BookingStatus.ACTIVE,
            col(Booking.starts_at) >= now - timedelta(hours=12),
            col(Booking.starts_at) <= now + timedelta(days=days),
        )
        .order_by(col(Booking.starts_at))
    ).all()
    return [(booking, patient) for booking, patient in rows]


@dataclass(frozen=True)
class PlannedView:
    step: str
    channel: str
    at: datetime


def plan_preview(clinic: Clinic, treatment: str, starts_at: datetime, *, now: datetime) -> list[PlannedView]:
    """The messages a patient in the clinic's timezone would get for a treatment at ``starts_at``."""
    plan = load_plan(treatment)
    planned = expand_plan(
        plan,
        starts_at=starts_at,
        duration_minutes=plan.default_duration_minutes,
        channels=[Channel.SMS, Channel.EMAIL],
        risk_flags=[],
        now=min(now, starts_at),
        quiet_hours=QuietHours.of(clinic.quiet_start, clinic.quiet_end),
        timezone=clinic.timezone,
    )
    return [PlannedView(p.step, p.channel, p.send_at) for p in planned if not p.skipped]


def patient_of_clinic(session: Session, clinic_id: int, patient_id: int) -> Patient | None:
    patient = session.get(Patient, patient_id)
    return patient if patient is not None and patient.clinic_id == clinic_id else None


def media_of_clinic(session: Session, clinic_id: int, media_id: int) -> Media | None:
    media = session.get(Media, media_id)
    return media if media is not None and media.clinic_id == clinic_id and media.data is not None else None
