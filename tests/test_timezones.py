"""How a patient reads a booking time in a message: their timezone, their language's words and order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.core.timezones import format_local, message_locale

NEW_YORK = "America/New_York"
# Tuesday 3 December 2024, 10:00 in New York.
TUESDAY_10AM_NY = datetime(2024, 12, 3, 15, 0, tzinfo=UTC)


def test_an_english_patient_reads_the_time_in_english() -> None:
    assert format_local(TUESDAY_10AM_NY, NEW_YORK, "en") == "Tue, Dec 3, 10:00"


def test_a_spanish_patient_reads_spanish_day_and_month_names_not_english_ones() -> None:
    assert format_local(TUESDAY_10AM_NY, NEW_YORK, "es") == "mar, 3 dic, 10:00"


@pytest.mark.parametrize(
    ("month", "spanish", "english"),
    [(1, "ene", "Jan"), (4, "abr", "Apr"), (8, "ago", "Aug"), (12, "dic", "Dec")],
)
def test_every_spanish_month_is_named_in_spanish(month: int, spanish: str, english: str) -> None:
    when = datetime(2025, month, 15, 15, 0, tzinfo=UTC)
    assert f"15 {spanish}" in format_local(when, NEW_YORK, "es")
    assert english not in format_local(when, NEW_YORK, "es")
    assert f"{english} 15" in format_local(when, NEW_YORK, "en")


def test_a_regional_spanish_tag_reads_spanish_too() -> None:
    for tag in ("es-MX", "es_US", "ES"):
        assert "dic" in format_local(TUESDAY_10AM_NY, NEW_YORK, tag), tag


@pytest.mark.parametrize("language", ["xx", "tlh", "", "../en", "i-klingon"])
def test_a_language_babel_does_not_know_falls_back_to_english(language: str) -> None:
    assert format_local(TUESDAY_10AM_NY, NEW_YORK, language) == "Tue, Dec 3, 10:00"
    assert message_locale(language).language == "en"


def test_the_time_is_the_patients_own_clock_across_the_date_line_and_daylight_saving() -> None:
    # 15:00 UTC on 3 Dec is already Wednesday 00:00 in Tokyo.
    assert format_local(TUESDAY_10AM_NY, "Asia/Tokyo", "en") == "Wed, Dec 4, 00:00"
    # New York moved its clocks forward at 02:00 on 9 March 2025: 06:30 UTC is 01:30 EST, 07:30 UTC 03:30 EDT.
    assert format_local(datetime(2025, 3, 9, 6, 30, tzinfo=UTC), NEW_YORK, "en") == "Sun, Mar 9, 01:30"
    assert format_local(datetime(2025, 3, 9, 7, 30, tzinfo=UTC), NEW_YORK, "en") == "Sun, Mar 9, 03:30"
    assert format_local(datetime(2025, 3, 9, 7, 30, tzinfo=UTC), NEW_YORK, "es") == "dom, 9 mar, 3:30"
