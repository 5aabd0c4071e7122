"""Retention for the outbox: what a message said is dropped after the retention period; that it was
sent, when, to which channel and how it was delivered stays (the delivery record)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from service.models import ScheduledMessage

SM = ScheduledMessage


def purge_bodies(session: Session, *, now: datetime, days: int) -> int:
    result = session.exec(
        update(SM)
        .where(col(SM.updated_at) < now - timedelta(days=days), col(SM.body).is_not(None))
        .values(body=None, context={})
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)
