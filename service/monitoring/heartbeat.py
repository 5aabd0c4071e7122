"""Heartbeats: a part of the system writing down that it ran, for the watchdog to read."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from service.models import Heartbeat

DISPATCHER = "dispatcher"


def beat(session: Session, name: str, *, now: datetime) -> None:
    session.merge(Heartbeat(name=name, at=now))


def last(session: Session, name: str) -> datetime | None:
    found = session.get(Heartbeat, name, populate_existing=True)
    return found.at if found else None
