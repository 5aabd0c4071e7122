"""Phone numbers: any way a person writes one → E.164, the country it belongs to, and how to show it."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

# Emergency numbers by the clinic's country, when the clinic does not set one.
# The number to call in an emergency, by country: the patient's (from their phone), else the clinic's. A
# Madrid patient of a New York clinic is told 112, not 911.
EMERGENCY_NUMBERS = {
    "US": "911", "CA": "911", "MX": "911", "PR": "911", "DO": "911", "PH": "911", "AR": "911",
    "GB": "999", "IE": "112", "AU": "000", "NZ": "111", "BR": "192", "CO": "123", "CL": "131",
    "VE": "911", "PE": "117", "CN": "120", "JP": "119", "KR": "119", "VN": "115", "IN": "112",
    "ES": "112", "FR": "112", "DE": "112", "IT": "112", "PT": "112", "NL": "112", "BE": "112",
    "AT": "112", "CH": "112", "SE": "112", "DK": "112", "FI": "112", "NO": "113", "PL": "112",
    "GR": "112", "CZ": "112", "RO": "112", "HU": "112", "IL": "101", "ZA": "10177",
}  # fmt: skip


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


@lru_cache(maxsize=4096)  # a clinic's number and its patients' come round at every send
def display_phone(e164: str) -> str:
    """The clinic's number as its patients write it: (555) 010-1234 in the US, 020 7946 0000 in the UK."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


@lru_cache(maxsize=65536)
def emergency_number_for(phone: str | None, *, fallback: str) -> str:
    """The emergency number of the country a patient's phone belongs to; the clinic's when unknown."""
    if not phone:
        return fallback
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return fallback
    return EMERGENCY_NUMBERS.get(region or "", fallback)
