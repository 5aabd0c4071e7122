"""The queries that move outbox rows: claim, guarded transitions, and the sweeps that keep rows moving.

Every state change is one UPDATE guarded by the state it expects, so two processes can never both take a
row: whoever changes the row owns the next step, whoever changes nothing does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session

from service.db import is_postgres
from service.models import MessageStatus, ScheduledMessage

SM = ScheduledMessage
S = MessageStatus


def transition(
    session: Session,
    message_id: int,
    *,
    from_states: Iterable[str],
    to_state: str,
    now: datetime,
    **values: Any,
) -> bool:
    """Move one row from one of ``from_states`` to ``to_state``; False when it was not in one of them."""
    result = session.execute(
        update(SM)
        .where(SM.id == message_id, SM.status.in_(list(from_states)))  # type: ignore[union-attr]
        .values(status=to_state, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def claim_due(session: Session, *, now: datetime, limit: int) -> list[int]:
    """Claim up to ``limit`` due rows (scheduled → queued) and return their ids.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets several dispatchers claim disjoint batches without waiting
    on each other. SQLite serialises writers, so the status guard in the same UPDATE is enough.
    """
    due = (
        select(SM.id)
        .where(SM.status == S.SCHEDULED, SM.send_at <= now)  # type: ignore[arg-type]
        .order_by(SM.send_at)  # type: ignore[arg-type]
        .limit(limit)
    )
    if is_postgres(session):
        due = due.with_for_update(skip_locked=True)
    result = session.execute(
        update(SM)
        .where(SM.id.in_(due.scalar_subquery()), SM.status == S.SCHEDULED)  # type: ignore[union-attr]
        .values(status=S.QUEUED, claimed_at=now, updated_at=now)
        .returning(SM.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result)


def requeue_lost(session: Session, *, now: datetime, older_than: timedelta) -> int:
    """Hand back rows claimed long ago that no worker started: their task was lost (broker restart)."""
    result = session.execute(
        update(SM)
        .where(SM.status == S.QUEUED, SM.claimed_at < now - older_than)  # type: ignore[arg-type,operator]
        .values(status=S.SCHEDULED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def mark_stuck_unknown(session: Session, *, now: datetime, older_than: timedelta) -> int:
    """Rows left in *sending* (a worker died mid-call) become unknown: settled later, never resent blind."""
    result = session.execute(
        update(SM)
        .where(SM.status == S.SENDING, SM.sending_at < now - older_than)  # type: ignore[arg-type,operator]
        .values(status=S.UNKNOWN, last_error="the worker stopped during the send", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def claim_unknown_for_reconcile(
    session: Session, *, now: datetime, grace: timedelta, limit: int
) -> list[int]:
    """Unknown rows whose status callback has not come within ``grace``, at most once per grace period.

    ``claimed_at`` records the last look-up, so a provider that is down is asked again later, not every
    few seconds.
    """
    candidates = (
        select(SM.id)
        .where(
            SM.status == S.UNKNOWN,
            SM.sending_at < now - grace,  # type: ignore[operator]
            (SM.claimed_at.is_(None)) | (SM.claimed_at < now - grace),  # type: ignore[union-attr,operator]
        )
        .limit(limit)
    )
    if is_postgres(session):
        candidates = candidates.with_for_update(skip_locked=True)
    result = session.execute(
        update(SM)
        .where(SM.id.in_(candidates.scalar_subquery()), SM.status == S.UNKNOWN)  # type: ignore[union-attr]
        .values(claimed_at=now, updated_at=now)
        .returning(SM.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result)


def overdue(session: Session, *, now: datetime, grace: timedelta) -> tuple[int, datetime | None]:
    """Scheduled rows due longer than ``grace`` ago, and the oldest due time: the dispatcher's silence.

    Beat claims due rows every few seconds, so anything older means beat or the workers are not running.
    """
    count, oldest = session.execute(
        select(func.count(), func.min(SM.send_at)).where(
            SM.status == S.SCHEDULED,
            SM.send_at < now - grace,  # type: ignore[operator]
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), oldest
