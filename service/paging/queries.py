"""Read-only questions about escalations, for the API, the dashboard and metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import case, func, select
from sqlmodel import Session

from service.core.enums import EscalationStatus, MessageKind, Severity
from service.models import Escalation, EscalationStep, Message, ScheduledMessage

_SEVERITY_ORDER = case(
    {Severity.EMERGENCY.value: 0, Severity.URGENT.value: 1}, value=Escalation.severity, else_=2
)


def clinic_escalations(
    session: Session, clinic_id: int, *, status: EscalationStatus | None, limit: int
) -> list[Escalation]:
    """Most serious first, then oldest first: the order staff should take them in."""
    query = select(Escalation).where(Escalation.clinic_id == clinic_id)
    if status is not None:
        query = query.where(Escalation.status == status)
    query = query.order_by(_SEVERITY_ORDER, Escalation.created_at, Escalation.id).limit(limit)  # type: ignore[arg-type]
    return list(session.scalars(query.execution_options(populate_existing=True)))


def messages_of(session: Session, escalation_id: int) -> list[Message]:
    return list(
        session.scalars(
            select(Message).where(Message.escalation_id == escalation_id).order_by(Message.received_at)  # type: ignore[arg-type]
        )
    )


def steps_of(session: Session, escalation_id: int) -> list[EscalationStep]:
    return list(
        session.scalars(
            select(EscalationStep)
            .where(EscalationStep.escalation_id == escalation_id)
            .order_by(EscalationStep.number)  # type: ignore[arg-type]
            .execution_options(populate_existing=True)
        )
    )


def pages_of(session: Session, escalation_id: int) -> list[ScheduledMessage]:
    return list(
        session.scalars(
            select(ScheduledMessage)
            .where(
                ScheduledMessage.escalation_id == escalation_id,
                ScheduledMessage.escalation_step_id.is_not(None),
            )  # type: ignore[union-attr]
            .order_by(ScheduledMessage.id)  # type: ignore[arg-type]
            .execution_options(populate_existing=True)
        )
    )


def current_level(session: Session, escalation: Escalation) -> int | None:
    """The highest level paged so far (None before the first page)."""
    paged = [max(step.levels) for step in steps_of(session, escalation.id) if step.paged_at and step.levels]  # type: ignore[arg-type]
    return max(paged) if paged else None


def open_by_severity(session: Session) -> list[tuple[str, int]]:
    rows = session.execute(
        select(Escalation.severity, func.count())
        .where(Escalation.status == EscalationStatus.OPEN)
        .group_by(Escalation.severity)
    )
    return [(str(severity), int(count)) for severity, count in rows]


def pages_by_outcome(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        select(ScheduledMessage.status, ScheduledMessage.channel, func.count())
        .where(ScheduledMessage.kind == MessageKind.PAGE)
        .group_by(ScheduledMessage.status, ScheduledMessage.channel)
    )
    return [(str(status), str(channel), int(count)) for status, channel, count in rows]


def seconds_to_first_page(session: Session, *, limit: int = 10_000) -> list[float]:
    """For the latest escalations: from the first message that opened each to its first page."""
    first_message = (
        select(Message.escalation_id, func.min(Message.received_at).label("received"))
        .group_by(Message.escalation_id)
        .subquery()
    )
    rows = session.execute(
        select(Escalation.first_paged_at, first_message.c.received)
        .join(first_message, first_message.c.escalation_id == Escalation.id)
        .where(Escalation.first_paged_at.is_not(None))  # type: ignore[union-attr]
        .order_by(Escalation.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    )
    return [_seconds(paged, received) for paged, received in rows]


def seconds_to_acknowledge(session: Session, *, limit: int = 10_000) -> list[float]:
    rows = session.execute(
        select(Escalation.acknowledged_at, Escalation.first_paged_at)
        .where(Escalation.acknowledged_at.is_not(None), Escalation.first_paged_at.is_not(None))  # type: ignore[union-attr]
        .order_by(Escalation.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    )
    return [_seconds(acked, paged) for acked, paged in rows]


def _seconds(later: datetime, earlier: datetime) -> float:
    # A subquery's aggregate comes back naive from SQLite; every stored time is UTC.
    if later.tzinfo is None:
        later = later.replace(tzinfo=UTC)
    if earlier.tzinfo is None:
        earlier = earlier.replace(tzinfo=UTC)
    return max(0.0, (later - earlier).total_seconds())
