"""Quiet hours in the patient's own timezone, across midnight and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.quiet_hours import is_quiet, next_allowed, parse_window

NIGHT = (time(21), time(8))
ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Auckland",
    "UTC",
]


def at(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone))


def test_daytime_is_allowed_as_it_is():
    when = at("America/New_York", 2026, 3, 2, 12, 0)
    assert next_allowed(when, timezone="America/New_York", start=NIGHT[0], end=NIGHT[1]) == when


def test_the_window_starts_at_nine_and_ends_at_eight():
    zone = "America/New_York"
    assert next_allowed(at(zone, 2026, 3, 2, 20, 59), timezone=zone, start=NIGHT[0], end=NIGHT[1]) == at(
        zone, 2026, 3, 2, 20, 59
    )
    assert next_allowed(at(zone, 2026, 3, 2, 21, 1), timezone=zone, start=NIGHT[0], end=NIGHT[1]) == at(
        zone, 2026, 3, 3, 8, 0
    )
    assert next_allowed(at(zone, 2026, 3, 3, 7, 59), timezone=zone, start=NIGHT[0], end=NIGHT[1]) == at(
        zone, 2026, 3, 3, 8, 0
    )
    assert next_allowed(at(zone, 2026, 3, 3, 8, 0), timezone=zone, start=NIGHT[0], end=NIGHT[1]) == at(
        zone, 2026, 3, 3, 8, 0
    )


def test_the_night_the_clocks_spring_forward_still_ends_at_eight_local():
    # 8 March 2026: New York jumps from 02:00 EST to 03:00 EDT.
    # 23:00 EST is 04:00 UTC; 08:00 EDT is 12:00 UTC.
    when = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)
    assert next_allowed(when, timezone="America/New_York", start=NIGHT[0], end=NIGHT[1]) == datetime(
        2026, 3, 8, 12, 0, tzinfo=UTC
    )


def test_the_night_the_clocks_fall_back_still_ends_at_eight_local():
    # 1 November 2026: 02:00 EDT becomes 01:00 EST. 08:00 EST is 13:00 UTC.
    when = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # 23:00 EDT on 31 October
    assert next_allowed(when, timezone="America/New_York", start=NIGHT[0], end=NIGHT[1]) == datetime(
        2026, 11, 1, 13, 0, tzinfo=UTC
    )


def test_the_same_instant_is_night_for_one_patient_and_day_for_another():
    when = datetime(2026, 3, 3, 4, 0, tzinfo=UTC)  # 23:00 in New York, 09:30 in Kolkata
    assert next_allowed(when, timezone="Asia/Kolkata", start=NIGHT[0], end=NIGHT[1]) == when
    assert next_allowed(when, timezone="America/New_York", start=NIGHT[0], end=NIGHT[1]) > when


def test_a_window_that_does_not_cross_midnight():
    start, end = time(12), time(14)
    zone = "Europe/London"
    assert next_allowed(at(zone, 2026, 6, 1, 13, 0), timezone=zone, start=start, end=end) == at(
        zone, 2026, 6, 1, 14, 0
    )
    assert not is_quiet(at(zone, 2026, 6, 1, 14, 0), start, end)


def test_an_empty_window_switches_quiet_hours_off():
    assert not is_quiet(at("UTC", 2026, 6, 1, 3, 0), time(0), time(0))


@pytest.mark.parametrize("bad", ["21-08", "9pm-8am", "21:00", "25:00-08:00"])
def test_a_badly_written_window_is_refused_with_an_example(bad):
    with pytest.raises(ValueError, match="21:00-08:00"):
        parse_window(bad)


instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
times = st.times().map(lambda t: t.replace(second=0, microsecond=0))


@settings(max_examples=400, deadline=None)
@given(when=instants, zone=st.sampled_from(ZONES), start=times, end=times)
def test_the_next_allowed_time_is_never_quiet_never_earlier_and_never_more_than_a_day_away(
    when, zone, start, end
):
    allowed = next_allowed(when, timezone=zone, start=start, end=end)
    assert allowed >= when
    assert allowed - when <= timedelta(hours=25)  # a day, plus an hour on a DST night
    assert not is_quiet(allowed.astimezone(ZoneInfo(zone)), start, end)
    if not is_quiet(when.astimezone(ZoneInfo(zone)), start, end):
        assert allowed == when


@settings(max_examples=300, deadline=None)
@given(when=instants, zone=st.sampled_from(ZONES))
def test_no_instant_between_now_and_the_allowed_time_is_outside_the_night(when, zone):
    """The result is the *first* allowed instant: every whole minute before it is still quiet."""
    allowed = next_allowed(when, timezone=zone, start=NIGHT[0], end=NIGHT[1])
    probe = when
    while probe + timedelta(minutes=30) < allowed:
        probe += timedelta(minutes=30)
        assert is_quiet(probe.astimezone(ZoneInfo(zone)), *NIGHT)


# --- the suite's own helper: tests with real processes book patients where it is daytime now ---------


@pytest.mark.parametrize("day", ["2026-01-15", "2026-03-08", "2026-03-29", "2026-07-01", "2026-11-01"])
def test_the_suites_daytime_timezone_is_daytime_at_every_hour_of_the_day(day):
    """Simulates the 24 hours (every 10 minutes, on ordinary and daylight-saving days) instead of relying
    on the hour the suite happens to run at."""
    from tests.stack import DAYTIME_MARGIN, daytime_timezone

    start = datetime.fromisoformat(f"{day}T00:00:00+00:00")
    window = parse_window("21:00-08:00")
    for step in range(24 * 6):
        now = start + timedelta(minutes=10 * step)
        zone = daytime_timezone(now)
        for moment in (now, now + DAYTIME_MARGIN):
            assert next_allowed(moment, timezone=zone, start=window[0], end=window[1]) == moment, (now, zone)
