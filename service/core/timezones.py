"""Timezones and local times at the edges: is a name a real IANA zone, and how a patient reads a time."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

_SPANISH_DAYS = ["lun", "mar", "mié", "jue", "vie", "sáb", "dom"]
_SPANISH_MONTHS = ["ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"]


def is_timezone(name: str) -> bool:
    return name in _timezones()


def timezone_problem(name: str) -> str | None:
    """Why ``name`` will not do as a patient's or clinic's timezone; None when it will."""
    if not is_timezone(name):
        return f"{name[:40]!r} is not an IANA timezone name; use one like 'America/New_York'"
    if name != "UTC" and ("/" not in name or name.startswith("Etc/GMT")):
        # "EST", "CST6CDT", "Etc/GMT+5": fixed offsets or old aliases. An EST patient would get their
        # 8 a.m. message at 9 every summer.
        return (
            f"{name[:10]!r} is a legacy zone with no daylight saving or a fixed offset; use a region name "
            "such as 'America/New_York', so messages keep to the patient's clock all year"
        )
    return None


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
