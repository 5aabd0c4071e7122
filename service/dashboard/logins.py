"""The dashboard's login rate limit, in the database so every web process counts the same failures."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlmodel import Session, col

from service.models import LoginAttempt


def _key(address: str, email: str) -> str:
    # Hashed: the table is a counter, not a log of who tried which address from where.
    return hashlib.sha256(f"{address}|{email.strip().lower()}".encode()).hexdigest()


def too_many(
    session: Session, address: str, email: str, *, now: datetime, limit: int, window: timedelta
) -> bool:
    count = session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(col(LoginAttempt.key) == _key(address, email), col(LoginAttempt.at) > now - window)
    )
    return bool(count and count >= limit)


def record_failure(session: Session, address: str, email: str, *, now: datetime, window: timedelta) -> None:
    session.execute(delete(LoginAttempt).where(col(LoginAttempt.at) < now - window))
    session.add(LoginAttempt(key=_key(address, email), at=now))


def clear(session: Session, address: str, email: str) -> None:
    session.execute(delete(LoginAttempt).where(col(LoginAttempt.key) == _key(address, email)))
