"""Read-only questions about escalations, for the API, the dashboard and metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import case, func, select
from sqlmodel import Session, col

from service.core.enums import EscalationStatus, MessageKind, Severity
from service.models import Escalation, EscalationStep, Message, ScheduledMessage, id_of

_SEVERITY_ORDER = case(
    {Severity.EMERGENCY.value: 0, Severity.URGENT.value: 1}, value=col(Escalation.severity), else_=2
)


def clinic_escalations(
    session: Session, clinic_id: int, *, status: EscalationStatus | None, limit: int
) -> list[Escalation]:
    """Most serious first, then oldest first: the order staff should take them in."""
    query = select(Escalation).where(col(Escalation.clinic_id) == clinic_id)
    if status is not None:
        query = query.where(col(Escalation.status) == status)
    query = query.order_by(_SEVERITY_ORDER, col(Escalation.created_at), col(Escalation.id)).limit(limit)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def messages_of(session: Session, escalation_id: int) -> list[Message]:
    return list(
        session.scalars(
            select(Message)
            .where(col(Message.escalation_id) == escalation_id)
            .order_by(col(Message.received_at))
        )
    )


def steps_of(session: Session, escalation_id: int) -> list[EscalationStep]:
    return list(
        session.scalars(
            select(EscalationStep)
            .where(col(EscalationStep.escalation_id) == escalation_id)
            .order_by(col(EscalationStep.number))
            .execution_options(populate_existing=True)
        )
    )


def pages_of(session: Session, escalation_id: int) -> list[ScheduledMessage]:
    return list(
        session.scalars(
            select(ScheduledMessage)
            .where(
                col(ScheduledMessage.escalation_id) == escalation_id,
                col(ScheduledMessage.escalation_step_id).is_not(None),
            )
            .order_by(col(ScheduledMessage.id))
            .execution_options(populate_existing=True)
        )
    )


def current_level(session: Session, escalation: Escalation) -> int | None:
    """The highest level paged so far (None before the first page)."""
    paged = [
        max(step.levels) for step in steps_of(session, id_of(escalation)) if step.paged_at and step.levels
    ]
    return max(paged) if paged else None


def open_by_severity(session: Session) -> list[tuple[str, int]]:
    rows = session.execute(
        select(col(Escalation.severity), func.count())
        .where(col(Escalation.status) == EscalationStatus.OPEN)
        .group_by(col(Escalation.severity))
    )
    return [(str(severity), int(count)) for severity, count in rows]


def pages_by_outcome(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        select(col(ScheduledMessage.status), col(ScheduledMessage.channel), func.count())
        .where(col(ScheduledMessage.kind) == MessageKind.PAGE)
        .group_by(col(ScheduledMessage.status), col(ScheduledMessage.channel))
    )
    return [(str(status), str(channel), int(count)) for status, channel, count in rows]


def seconds_to_first_page(session: Session, *, limit: int = 10_000) -> list[float]:
    """For the latest escalations: from the first message that opened each to its first page."""
    first_message = (
        select(col(Message.escalation_id), func.min(col(Message.received_at)).label("received"))
        .group_by(col(Message.escalation_id))
        .subquery()
    )
    rows = session.execute(
        select(col(Escalation.first_paged_at), first_message.c.received)
        .join(first_message, first_message.c.escalation_id == Escalation.id)
        .where(col(Escalation.first_paged_at).is_not(None))
        .order_by(col(Escalation.id).desc())
        .limit(limit)
    )
    return [_seconds(paged, received) for paged, received in rows]


def seconds_to_acknowledge(session: Session, *, limit: int = 10_000) -> list[float]:
    rows = session.execute(
        select(col(Escalation.acknowledged_at), col(Escalation.first_paged_at))
        .where(col(Escalation.acknowledged_at).is_not(None), col(Escalation.first_paged_at).is_not(None))
        .order_by(col(Escalation.id).desc())
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
