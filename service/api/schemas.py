"""The shapes of the booking API (docs/architecture.md#interface), validated so bad input is a 422 that
names the field. Routes turn them into the plain commands the use cases take (``to_command``)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from service.core.enums import Channel, RiskFlag, Treatment
from service.core.timezones import timezone_problem
from service.patients.records import PatientChanges, PatientDetails
from service.scheduling.bookings import NewBooking

ChannelName = Literal["sms", "email"]
_BOTH_CHANNELS: list[ChannelName] = ["sms", "email"]
Language = Literal["en", "es"]


# The first and last years a treatment may be booked in: beyond them a date is a typo, and adding a care
# plan's weeks to year 9999 would overflow.
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100


def _check_timezone(value: str) -> str:
    problem = timezone_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_when(value: datetime) -> datetime:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"starts_at must be between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value.astimezone(UTC)


class _Input(BaseModel):
    """Every request body: unknown fields refused, strings trimmed and capped, no control characters
    (PostgreSQL refuses a NUL byte; a name with one would fail much later, as a 500)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, str_max_length=2000)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: object) -> object:
        if isinstance(value, str) and any(ord(c) < 32 and c not in "\t\n\r" for c in value):
            raise ValueError("must not contain control characters")
        return value


def _check_email(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


def _check_channels(value: list[ChannelName]) -> list[ChannelName]:
    if len(set(value)) != len(value):
        raise ValueError("each channel may appear once")
    return value


class PatientIn(_Input):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=254)
    timezone: str = Field(max_length=64)
    language: Language = "en"
    channels: list[ChannelName] = Field(default_factory=_BOTH_CHANNELS.copy, min_length=1, max_length=2)
    sms_consent: bool = True
    # At most one of each (a longer list only repeats one): the vocabulary's size, not a fixed 12.
    risk_flags: list[RiskFlag] = Field(default_factory=list, max_length=len(RiskFlag))

    _timezone = field_validator("timezone")(_check_timezone)
    _email = field_validator("email")(_check_email)
    _channels = field_validator("channels")(_check_channels)

    @model_validator(mode="after")
    def _channels_need_contacts(self) -> PatientIn:
        if "sms" in self.channels and not self.phone:
            raise ValueError("channels includes 'sms' but no phone was given")
        if "email" in self.channels and not self.email:
            raise ValueError("channels includes 'email' but no email was given")
        return self


class BookingIn(_Input):
    external_id: str = Field(min_length=1, max_length=200)
    treatment: Treatment
    starts_at: AwareDatetime
    duration_minutes: int | None = Field(default=None, ge=5, le=720)
    patient: PatientIn

    _when = field_validator("starts_at")(_check_when)

    def digest(self, *, phone: str | None) -> str:
        """Identifies the request's content (with the phone as parsed, so "(212) 555-0147" and
        "+12125550147" are the same request): the same external id with another digest is a conflict."""
        content = self.model_dump(mode="json")
        content["patient"]["phone"] = phone
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_command(self, *, phone: str | None) -> NewBooking:
        """The use case's command; ``phone`` is the patient's number parsed to E.164 by the route."""
        details = self.patient
        return NewBooking(
            external_id=self.external_id,
            treatment=self.treatment.value,
            starts_at=self.starts_at,
            duration_minutes=self.duration_minutes,
            request_digest=self.digest(phone=phone),
            patient=PatientDetails(
                first_name=details.first_name,
                last_name=details.last_name,
                phone=phone,
                email=details.email,
                timezone=details.timezone,
                language=details.language,
                channels=tuple(Channel(c) for c in details.channels),
                sms_consent=details.sms_consent,
                risk_flags=tuple(flag.value for flag in details.risk_flags),
            ),
        )


class BookingReschedule(_Input):
    starts_at: AwareDatetime

    _when = field_validator("starts_at")(_check_when)


# The default of a patch field that may be left out but not set to null: left out, model_dump(exclude_unset)
# drops it; null is refused (422). None is not of the field's type, hence Any.
_LEFT_OUT: Any = None


class PatientPatch(_Input):
    """Only the fields given change. Phone and email may be cleared with null; channels, language and
    timezone may not (a patient always has them)."""

    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=254)
    # Not Optional on purpose: null is refused with a 422 that names the field (unset is fine).
    channels: list[ChannelName] = Field(default=_LEFT_OUT, min_length=1, max_length=2)
    language: Language = Field(default=_LEFT_OUT)
    timezone: str = Field(default=_LEFT_OUT, max_length=64)

    _timezone = field_validator("timezone")(_check_timezone)
    _email = field_validator("email")(_check_email)
    _channels = field_validator("channels")(_check_channels)

    def to_command(self, *, phone: str | None) -> PatientChanges:
        values = self.model_dump(exclude_unset=True)
        if "phone" in values:
            values["phone"] = phone
        return PatientChanges(values=values)


class MessageOut(BaseModel):
    id: int
    step: str
    channel: str
    send_at: datetime
    status: str
    attempts: int = 0
    last_error: str | None = None
    booking_id: int | None = None
    patient_id: int | None = None


class BookingOut(BaseModel):
    id: int
    external_id: str
    status: str
    treatment: str
    starts_at: datetime
    duration_minutes: int
    patient_id: int
    messages: list[MessageOut]


class PatientOut(BaseModel):
    id: int
    first_name: str
    last_name: str
    phone: str | None
    email: str | None
    timezone: str
    language: str
    channels: list[str]
    sms_opted_out: bool
    email_opted_out: bool
    sms_unreachable_reason: str | None
