"""Contact details at the edges: phone numbers, local times, labels, and signed unsubscribe links."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers

from service.models import Booking
from service.settings import Settings

_SPANISH_DAYS = ["lun", "mar", "mié", "jue", "vie", "sáb", "dom"]
_SPANISH_MONTHS = ["ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"]

# Emergency numbers by the clinic's country, when the clinic does not set one.
EMERGENCY_NUMBERS = {
    "US": "911",
    "CA": "911",
    "MX": "911",
    "GB": "999",
    "IE": "112",
    "AU": "000",
    "NZ": "111",
}


class InvalidPhone(ValueError):
    pass


def parse_phone(text: str, *, region: str) -> str:
    """Any reasonable way of writing a phone number → E.164. National formats take the clinic's country."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"{text!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(
            f"{text!r} is not a valid phone number for {region}; "
            "give it in international form, e.g. +15550101234"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def region_of(e164: str) -> str:
    """The country a number belongs to ('US', 'GB', ...); 'US' when it cannot be told."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or "US"
    except phonenumbers.NumberParseException:
        return "US"


def display_phone(e164: str) -> str:
    """The clinic's number as its patients write it: (555) 010-1234 in the US, 020 7946 0000 in the UK."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


def is_timezone(name: str) -> bool:
    return name in _timezones()


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())  # reads the tz database once per process


def format_local(when: datetime, timezone: str, language: str) -> str:
    """'Tue 3 Dec, 10:00' in the patient's timezone and language."""
    local = when.astimezone(ZoneInfo(timezone))
    if language == "es":
        return (
            f"{_SPANISH_DAYS[local.weekday()]} {local.day} {_SPANISH_MONTHS[local.month - 1]}, {local:%H:%M}"
        )
    return f"{local:%a} {local.day} {local:%b}, {local:%H:%M}"


def treatment_label(booking: Booking, language: str) -> str:
    labels = booking.plan_snapshot.get("labels", {})
    return labels.get(language) or labels.get("en") or booking.treatment.replace("_", " ")


def _unsubscribe_signature(patient_id: int, settings: Settings) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"unsubscribe:{patient_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def unsubscribe_url(patient_id: int, settings: Settings) -> str:
    token = f"{patient_id}.{_unsubscribe_signature(patient_id, settings)}"
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/unsubscribe/{token}"


def patient_from_unsubscribe_token(token: str, settings: Settings) -> int | None:
    """The patient id a link was made for, or None when the link was not made by us."""
    patient_text, _, signature = token.partition(".")
    if not patient_text.isdigit():
        return None
    patient_id = int(patient_text)
    if not hmac.compare_digest(signature, _unsubscribe_signature(patient_id, settings)):
        return None
    return patient_id
