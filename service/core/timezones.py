"""Timezones and local times at the edges: is a name a real IANA zone, and how a patient reads a time."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

_SPANISH_DAYS = ["lun", "mar", "mié", "jue", "vie", "sáb", "dom"]
_SPANISH_MONTHS = ["ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"]


def is_timezone(name: str) -> bool:
    return name in _timezones()


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())  # reads the tz database once per process


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def format_local(when: datetime, timezone: str, language: str) -> str:
    """'Tue 3 Dec, 10:00' in the patient's timezone and language."""
    local = when.astimezone(zone(timezone))
    if language == "es":
        return (
            f"{_SPANISH_DAYS[local.weekday()]} {local.day} {_SPANISH_MONTHS[local.month - 1]}, {local:%H:%M}"
        )
    return f"{local:%a} {local.day} {local:%b}, {local:%H:%M}"


def describe_local(when: datetime, timezone: str) -> str:
    """'08:00 America/New_York (13:00 UTC)': a time for logs and staff, with no personal detail."""
    local = when.astimezone(zone(timezone))
    return f"{local:%H:%M} {timezone} ({when.astimezone(zone('UTC')):%H:%M} UTC)"
