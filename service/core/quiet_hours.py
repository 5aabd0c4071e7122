"""Quiet hours: no SMS between, say, 21:00 and 08:00 in the patient's own timezone.

Pure: takes the instant and returns the first allowed instant. US law (TCPA) counts 8 a.m. to 9 p.m. at
the recipient's location, and a text at 3 a.m. about pus is how a clinic loses a patient's trust.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

_WINDOW = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


def parse_window(text: str) -> tuple[time, time]:
    """'21:00-08:00' → (21:00, 08:00). Raises ValueError with a message a user can act on."""
    match = _WINDOW.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError(text)
        return time.fromisoformat(f"{int(match[1]):02d}:{match[2]}"), time.fromisoformat(
            f"{int(match[3]):02d}:{match[4]}"
        )
    except ValueError as exc:
        raise ValueError(f"quiet hours must look like 21:00-08:00, got {text!r}") from exc


def is_quiet(local: datetime, start: time, end: time) -> bool:
    """Is this local wall-clock time inside the window [start, end)? A window may cross midnight."""
    if start == end:
        return False  # an empty window: the clinic has switched quiet hours off
    t = local.time().replace(tzinfo=None)
    if start < end:
        return start <= t < end
    return t >= start or t < end


def _local_at(day: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The instant the wall clock in ``zone`` shows ``at`` on ``day``'s date.

    On a spring-forward day the time may not exist (02:30 in New York); round-tripping through UTC moves
    it forward past the gap, which is still outside quiet hours.
    """
    naive = datetime.combine(day.date(), at)
    candidate = naive.replace(tzinfo=zone)
    return candidate.astimezone(UTC).astimezone(zone)


def next_allowed(when: datetime, *, timezone: str, start: time, end: time) -> datetime:
    """The earliest instant at or after ``when`` (aware) outside quiet hours in ``timezone``, in UTC."""
    if when.tzinfo is None:
        raise ValueError("next_allowed needs an aware datetime")
    zone = ZoneInfo(timezone)
    local = when.astimezone(zone)
    if not is_quiet(local, start, end):
        return when.astimezone(UTC)
    # Inside the window: the next time the wall clock reads ``end``, today or tomorrow.
    candidate = _local_at(local, end, zone)
    if candidate <= local:
        candidate = _local_at(local + timedelta(days=1), end, zone)
    return candidate.astimezone(UTC)


@dataclass(frozen=True)
class QuietHours:
    """A clinic's window with no SMS, read in each patient's own timezone."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        return cls(*parse_window(text))

    @classmethod
    def of(cls, start: str, end: str) -> QuietHours:
        """From the clinic's stored "HH:MM" strings."""
        return cls(time.fromisoformat(start), time.fromisoformat(end))

    def next_allowed(self, when: datetime, timezone: str) -> datetime:
        return next_allowed(when, timezone=timezone, start=self.start, end=self.end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"
