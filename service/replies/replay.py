"""One use per signature: a signed webhook's token is remembered for its replay window, in the database so
every web process refuses the second use of a captured post."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from service.models import WebhookToken


def first_use(session: Session, provider: str, token: str, *, now: datetime) -> bool:
    """Remember ``token``; False when it was seen before (a replay). The caller commits."""
    try:
        with session.begin_nested():
            session.add(WebhookToken(provider=provider, token=token[:200], seen_at=now))
    except IntegrityError:
        return False
    return True


def forget_older_than(session: Session, *, now: datetime, age: timedelta) -> int:
    """Tokens past their window: a replay of them fails on the signature's age anyway."""
    result = session.exec(delete(WebhookToken).where(col(WebhookToken.seen_at) < now - age))
    return result.rowcount
