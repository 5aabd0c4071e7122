"""Timezones and local times at the edges: is a name a real IANA zone, and how a patient reads a time."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton

# The language a date falls back to when Babel does not know the patient's, as the message templates do.
FALLBACK_LANGUAGE = "en"
# CLDR skeletons: the parts a booking time shows, in whatever order and words the locale writes them.
# Babel matches a date skeleton or a time skeleton, not both at once, so the two are joined with the
# locale's own date-time pattern ("{1}, {0}" in English and Spanish).
_DATE_SKELETON = "MMMEd"  # weekday, day, abbreviated month: "Tue, Dec 3", "mar, 3 dic"
_TIME_SKELETON = "Hm"  # 24-hour clock, as messages have always shown it: "10:00", "9:05" in Spanish


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


@cache
def message_locale(language: str) -> Locale:
    """The Babel locale for a patient's language ("es", "es-MX", "es_MX"); English for one Babel does not
    know (or an empty or malformed tag), so a message is never refused for its date."""
    try:
        return Locale.parse((language or "").strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(FALLBACK_LANGUAGE)


def format_local(when: datetime, timezone: str, language: str) -> str:
    """A booking time as a patient reads it in a message, in their timezone and language: 'Tue, Dec 3,
    10:00' in English, 'mar, 3 dic, 10:00' in Spanish (CLDR's words and order, through Babel)."""
    tz = zone(timezone)
    locale = message_locale(language)
    date = format_skeleton(_DATE_SKELETON, when, tzinfo=tz, locale=locale)
    time = format_skeleton(_TIME_SKELETON, when, tzinfo=tz, locale=locale)
    return str(locale.datetime_formats["medium"]).format(time, date)


def describe_local(when: datetime, timezone: str) -> str:
    """'08:00 America/New_York (13:00 UTC)': a time for logs and staff, with no personal detail."""
    local = when.astimezone(zone(timezone))
    return f"{local:%H:%M} {timezone} ({when.astimezone(zone('UTC')):%H:%M} UTC)"
