"""Phone numbers: any way a person writes one → E.164, the country it belongs to, and how to show it."""

from __future__ import annotations

import phonenumbers

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
