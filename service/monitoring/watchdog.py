"""The watchdog loop, in every web process: look every WATCHDOG_INTERVAL_SECONDS, raise and clear alarms.

It runs beside the web server on purpose: it needs neither beat nor a worker nor the broker, so it still
speaks when those are what failed. Several web processes watching is safe: an alarm is raised once.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sqlmodel import Session

from service.channels import build_channels
from service.db import get_engine
from service.monitoring import alarms
from service.monitoring.checks import problems
from service.settings import Settings

log = logging.getLogger(__name__)


def look(
    session: Session, *, now: datetime, settings: Settings, watching_since: datetime, channels: dict
) -> list[alarms.Change]:
    """One look: measure, record what changed, tell people. Returns the changes (for tests and logs)."""
    found = problems(session, now=now, settings=settings, watching_since=watching_since)
    changes = alarms.sync(session, found, now=now)
    for change in changes:
        alarms.notify(session, change, channels=channels, settings=settings)
    return changes


class Watchdog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aftercare-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        channels = build_channels(self.settings)
        while not self._stop.wait(self.settings.WATCHDOG_INTERVAL_SECONDS):
            try:
                with Session(get_engine(), expire_on_commit=False) as session:
                    look(
                        session,
                        now=datetime.now(UTC),
                        settings=self.settings,
                        watching_since=self.started,
                        channels=channels,
                    )
            except Exception as exc:  # the watchdog must outlive a database hiccup; it looks again later
                log.error("the watchdog could not look: %s", type(exc).__name__)
