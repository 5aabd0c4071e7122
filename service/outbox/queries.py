"""Read-only questions about the outbox, for the API, health checks and metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlmodel import Session, col

from service.core.enums import MessageStatus
from service.models import ScheduledMessage

SM = ScheduledMessage


def booking_rows(session: Session, booking_id: int) -> list[ScheduledMessage]:
    """A booking's messages in the order they go out."""
    return list(
        session.scalars(
            select(SM)
            .where(col(SM.booking_id) == booking_id)
            .order_by(col(SM.send_at), col(SM.step), col(SM.channel))
            # Transitions are UPDATE statements: read the rows as they are now, not as first loaded.
            .execution_options(populate_existing=True)
        )
    )


def clinic_rows(
    session: Session, clinic_id: int, *, status: MessageStatus | None, limit: int
) -> list[ScheduledMessage]:
    """A clinic's outbound messages, most recently changed first (``status=failed``: what staff must fix)."""
    query = select(SM).where(col(SM.clinic_id) == clinic_id)
    if status is not None:
        query = query.where(col(SM.status) == status)
    return list(session.scalars(query.order_by(col(SM.updated_at).desc(), col(SM.id).desc()).limit(limit)))


def counts_by_status(session: Session) -> list[tuple[str, str, int]]:
    """(status, channel, rows) over the whole table, for /metrics."""
    rows = session.execute(
        select(col(SM.status), col(SM.channel), func.count()).group_by(col(SM.status), col(SM.channel))
    )
    return [(str(status), str(channel), int(count)) for status, channel, count in rows]


def overdue(session: Session, *, now: datetime, grace: timedelta) -> tuple[int, datetime | None]:
    """Scheduled rows due longer than ``grace`` ago, and the oldest due time: the dispatcher's silence.

    Beat claims due rows every few seconds, so anything older means beat or the workers are not running.
    """
    count, oldest = session.execute(
        select(func.count(), func.min(SM.send_at)).where(
            col(SM.status) == MessageStatus.SCHEDULED,
            col(SM.send_at) < now - grace,
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), oldest


def queued_count(session: Session) -> int:
    """Rows claimed and waiting in the broker for a worker: the dispatcher's backpressure."""
    return int(session.scalar(select(func.count()).where(col(SM.status) == MessageStatus.QUEUED)) or 0)
