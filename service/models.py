"""The tables. Every datetime is stored as UTC and handed back timezone-aware; every status, channel, kind
and severity column holds one of the values of its enum in ``service.core.enums``, and the database
refuses anything else (a CHECK constraint per column).

Which module may change which table's state is in docs/architecture.md: the outbox's ``status`` is written
only by ``service.outbox``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Column, Field, SQLModel

from service.core.enums import (
    BookingStatus,
    Channel,
    EscalationStatus,
    EscalationSubject,
    InboundState,
    InboxState,
    Keyword,
    MessageKind,
    MessageStatus,
    Severity,
    StepStatus,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python, naive UTC in the column, on SQLite and PostgreSQL alike.

    SQLite keeps no offset, so a naive value read back would be compared with aware ones and fail; one
    type at the edge keeps every datetime in the code aware and in UTC.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_column(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def json_column(default_factory: Any = list) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(sa.JSON, nullable=False))


def enum_column(
    enum: type[StrEnum], *, name: str, default: Any = None, nullable: bool = False, index: bool = False
) -> Any:
    """A VARCHAR limited to the enum's values by a named CHECK constraint (portable: no PostgreSQL enum
    type to migrate when a value is added), read back as the enum member."""
    column_type = sa.Enum(
        enum,
        native_enum=False,
        create_constraint=True,
        length=max(len(member.value) for member in enum),
        values_callable=lambda members: [member.value for member in members],
        name=f"ck_{name}",
        validate_strings=True,
    )
    return Field(default=default, sa_column=Column(column_type, nullable=nullable, index=index))


class _Row(Protocol):
    @property
    def id(self) -> int | None: ...


def id_of(row: _Row) -> int:
    """The primary key of a row that is in the database (loaded, or added and flushed). Every table's
    ``id`` is ``int | None`` only because a new row has none until its INSERT; past that point a missing
    id is a bug, said here rather than carried into a query as NULL."""
    if row.id is None:
        raise ValueError(f"this {type(row).__name__} has no id: it was never flushed")
    return row.id


class Clinic(SQLModel, table=True):
    # An SMS number and a sender address belong to one clinic: a reply is routed by the number or address
    # it was sent to, so a second clinic on the same one would receive the first one's patients' reports.
    __table_args__ = (
        sa.UniqueConstraint("sms_from", name="uq_clinic_sms_from"),
        sa.Index("uq_clinic_email_from", sa.text("lower(email_from)"), unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str
    timezone: str
    sms_from: str  # E.164; also the number patients are told to call
    email_from: str
    country: str = "US"  # region for national-format phone numbers, from sms_from
    emergency_number: str = "911"
    quiet_start: str = "21:00"  # local to the patient; SMS only
    quiet_end: str = "08:00"
    # sha256 of the API key: the key is 256 random bits, so a slow hash buys nothing and would cost every
    # request a few tens of milliseconds.
    # None once revoked (`aftercare clinic revoke-key`): no key works until `rotate-key` makes a new one.
    api_key_hash: str | None = Field(default=None, index=True, unique=True)
    ack_timeouts: dict[str, int] = json_column(dict)
    # A message in the staff inbox not answered within this long is flagged.
    inbox_reply_within_minutes: int = 240
    created_at: datetime = utc_column(nullable=False)


class StaffMember(SQLModel, table=True):
    __tablename__ = "staff_member"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    name: str
    phone: str
    email: str
    role: str = "clinician"
    level: int = 1  # escalation level; 1 is paged first
    password_hash: str | None = None
    active: bool = True
    created_at: datetime = utc_column(nullable=False)

    @property
    def initials(self) -> str:
        return "".join(part[:1] for part in self.name.split()[:2]).upper()


class Patient(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    first_name: str
    last_name: str
    phone: str | None = Field(default=None, index=True)  # E.164
    email: str | None = Field(default=None, index=True)
    timezone: str
    language: str = "en"
    channels: list[str] = json_column(list)
    sms_consent: bool = True
    risk_flags: list[str] = json_column(list)
    sms_opted_out_at: datetime | None = utc_column()
    email_opted_out_at: datetime | None = utc_column()
    # Set when the provider says SMS can never reach this number (invalid, landline): later SMS fall back
    # to email instead of failing one by one.
    sms_unreachable_reason: str | None = None
    created_at: datetime = utc_column(nullable=False)
    updated_at: datetime = utc_column(nullable=False)

    @property
    def initials(self) -> str:
        return f"{self.first_name[:1]}{self.last_name[:1]}".upper()


class Booking(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("clinic_id", "external_id", name="uq_booking_external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    external_id: str
    treatment: str
    starts_at: datetime = utc_column(nullable=False)
    duration_minutes: int
    status: BookingStatus = enum_column(BookingStatus, name="booking_status", default=BookingStatus.ACTIVE)
    # A digest of the create request: the same external id with a different body is a conflict.
    request_digest: str
    # The care plan as it was when the booking was made, so later edits do not change a running schedule.
    plan_snapshot: dict[str, Any] = json_column(dict)
    created_at: datetime = utc_column(nullable=False)
    updated_at: datetime = utc_column(nullable=False)
    cancelled_at: datetime | None = utc_column()


class ScheduledMessage(SQLModel, table=True):
    """The outbox: one row per (booking, step, channel), claimed by the dispatcher when due."""

    __tablename__ = "scheduled_message"
    __table_args__ = (
        sa.UniqueConstraint("booking_id", "step", "channel", name="uq_scheduled_message_step"),
        sa.UniqueConstraint(
            "escalation_step_id", "staff_member_id", "channel", name="uq_scheduled_message_page"
        ),
        sa.Index("ix_scheduled_message_status_send_at", "status", "send_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    # A care-plan message or an answer has a booking and a patient; a page has an escalation step and a
    # staff member instead.
    booking_id: int | None = Field(default=None, foreign_key="booking.id", index=True)
    patient_id: int | None = Field(default=None, foreign_key="patient.id", index=True)
    staff_member_id: int | None = Field(default=None, foreign_key="staff_member.id", index=True)
    escalation_id: int | None = Field(default=None, foreign_key="escalation.id", index=True)
    escalation_step_id: int | None = Field(default=None, foreign_key="escalation_step.id")
    # An explicit address, for a staff answer to a sender who is no patient of ours.
    to_address: str | None = None
    step: str
    channel: Channel = enum_column(Channel, name="scheduled_message_channel")
    template: str
    send_at: datetime = utc_column(nullable=False)
    # Written only by service.outbox (one guarded UPDATE per transition; docs/architecture.md).
    status: MessageStatus = enum_column(
        MessageStatus, name="scheduled_message_status", default=MessageStatus.SCHEDULED
    )
    attempts: int = 0
    # Exceptions in our own send code (not provider answers); at MAX_SEND_CRASHES the row fails.
    crashes: int = 0
    last_error: str | None = None
    # The provider's code, or one of ours for a row our own side could not send (service.outbox.lifecycle).
    error_code: str | None = None
    provider_id: str | None = Field(default=None, index=True)
    # The row this one stands in for when SMS was permanently impossible.
    fallback_for_id: int | None = Field(default=None, foreign_key="scheduled_message.id")
    claimed_at: datetime | None = utc_column()
    sending_at: datetime | None = utc_column()
    # An unknown outcome without the provider's answer: before this time, a look-up that finds nothing
    # proves nothing (the provider may still act on the request); from then on it means "never sent". Unset
    # when the provider answered (a 5xx): the first look-up is conclusive.
    settle_after: datetime | None = utc_column()
    sent_at: datetime | None = utc_column()
    delivered_at: datetime | None = utc_column()
    # What was sent, kept so staff can see it and a reconciliation can match it with the provider's record.
    body: str | None = None
    # "care" (a care-plan step) or "reply" (our answer to a patient's message: it goes even to a patient
    # who opted out of reminders, because they just wrote to us).
    kind: MessageKind = enum_column(MessageKind, name="scheduled_message_kind", default=MessageKind.CARE)
    # Extra template context, e.g. the answer a routine reply carries.
    context: dict[str, Any] = json_column(dict)
    created_at: datetime = utc_column(nullable=False)
    updated_at: datetime = utc_column(nullable=False)


class Message(SQLModel, table=True):
    """A message a patient (or anyone) sent us, stored once per provider id, with its triage.

    Urgent and emergency messages belong to an escalation; routine ones and those from unknown or shared
    phones wait in the staff inbox (``inbox_state``).
    """

    __table_args__ = (
        sa.Index("ix_message_patient_received", "patient_id", "received_at"),
        # The same message posted again is stored once — per clinic and channel: an email whose Message-ID
        # happens to equal an SMS sid, or one email sent to two clinics, is two messages.
        sa.UniqueConstraint("clinic_id", "channel", "provider_id", name="uq_message_clinic_channel_provider"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    patient_id: int | None = Field(default=None, foreign_key="patient.id")
    booking_id: int | None = Field(default=None, foreign_key="booking.id", index=True)
    direction: str = "inbound"
    channel: Channel = enum_column(Channel, name="message_channel")
    # Twilio's MessageSid or the email's Message-ID: the same message posted twice is stored once.
    provider_id: str
    sender: str
    recipient: str
    body: str
    # The text triage read: the new part of an email reply, or this SMS with the patient's last few.
    triage_text: str = ""
    # One dict per photo: its url, then media_id (int) once kept, or not_kept (why); deleted_at_provider.
    media: list[dict[str, Any]] = json_column(list)
    received_at: datetime = utc_column(nullable=False)
    severity: Severity = enum_column(Severity, name="message_severity", default=Severity.NONE)
    keyword: Keyword | None = enum_column(Keyword, name="message_keyword", nullable=True)
    findings: list[dict[str, Any]] = json_column(list)
    # More than one patient shares this phone: the most recent booking was chosen; staff should check.
    ambiguous_patient: bool = False
    # False when the provider could not vouch for the sender (an email without SPF or DKIM passing): kept
    # and triaged, but it never changes the patient's consent.
    sender_verified: bool = True
    auto_reply: str | None = None
    escalation_id: int | None = Field(default=None, foreign_key="escalation.id", index=True)
    # From a staff member's phone: a command ("ACK 42"), never triaged as a patient.
    staff_member_id: int | None = Field(default=None, foreign_key="staff_member.id")
    inbox_state: InboxState | None = enum_column(
        InboxState, name="message_inbox_state", nullable=True, index=True
    )
    replied_at: datetime | None = utc_column()
    replied_by_id: int | None = Field(default=None, foreign_key="staff_member.id")
    # The transactional inbox (docs/architecture.md#the-inbox): the webhook stores the message as it came
    # and the inbound worker does the rest. ``attempts`` counts the worker's tries, a crash included.
    state: InboundState = enum_column(
        InboundState, name="message_state", default=InboundState.RECEIVED, index=True
    )
    attempts: int = 0
    last_attempt_at: datetime | None = utc_column()
    processed_at: datetime | None = utc_column()
    failure: str | None = None  # why processing failed (an exception's class, never its text)
    # An email as it came: its MIME (for the DKIM check) and its headers in order, as [name, value] pairs.
    raw: bytes | None = Field(default=None, sa_column=Column(sa.LargeBinary, nullable=True))
    headers: list[list[str]] = json_column(list)
    automatic: bool = False  # an auto-reply or an automatic forward: triaged and shown, never answered
    # How the sender was proven (or why not), in words staff can read.
    sender_check: str | None = None


class UnroutedMessage(SQLModel, table=True):
    """A message sent to a number or address no clinic has: kept for the operator (`aftercare unrouted`),
    who is told once (ALERT_EMAIL), never any clinic's staff."""

    __tablename__ = "unrouted_message"
    __table_args__ = (
        sa.UniqueConstraint(
            "channel", "recipient", "provider_id", name="uq_unrouted_channel_recipient_provider"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: Channel = enum_column(Channel, name="unrouted_message_channel")
    provider_id: str
    sender: str
    recipient: str = Field(index=True)
    body: str
    received_at: datetime = utc_column(nullable=False, index=True)


class Escalation(SQLModel, table=True):
    """Paging about one subject until a person acknowledges it.

    ``policy`` is the clinic's escalation policy frozen when the escalation opened (later edits do not
    change a running one); ``active_step_id`` is the one step allowed to act — a step whose id is no longer
    active does nothing when its time comes.
    """

    __table_args__ = (sa.UniqueConstraint("clinic_id", "ack_code", name="uq_escalation_ack_code"),)

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    subject: EscalationSubject = enum_column(EscalationSubject, name="escalation_subject")
    patient_id: int | None = Field(default=None, foreign_key="patient.id", index=True)
    booking_id: int | None = Field(default=None, foreign_key="booking.id")
    title: str = ""  # what a clinic alert is about; patient escalations show the patient instead
    severity: Severity = enum_column(Severity, name="escalation_severity")
    status: EscalationStatus = enum_column(
        EscalationStatus, name="escalation_status", default=EscalationStatus.OPEN, index=True
    )
    # Random, typed back by SMS to acknowledge ("ACK 4K7P"): service.core.escalation.new_ack_code.
    ack_code: str = Field(max_length=8)
    policy: dict[str, Any] = json_column(dict)
    active_step_id: int | None = Field(default=None, index=True)
    created_at: datetime = utc_column(nullable=False)
    first_paged_at: datetime | None = utc_column()
    acknowledged_at: datetime | None = utc_column()
    acknowledged_by_id: int | None = Field(default=None, foreign_key="staff_member.id")
    acknowledged_via: str | None = None  # "sms", "dashboard", "api"
    resolved_at: datetime | None = utc_column()
    resolved_by_id: int | None = Field(default=None, foreign_key="staff_member.id")
    resolution_note: str | None = None
    updated_at: datetime = utc_column(nullable=False)


class EscalationStep(SQLModel, table=True):
    """One round of pages: the levels it pages and when; claimed by the dispatcher when due."""

    __tablename__ = "escalation_step"
    __table_args__ = (sa.Index("ix_escalation_step_status_due_at", "status", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    escalation_id: int = Field(foreign_key="escalation.id", index=True)
    number: int  # 1, 2, 3, … within its escalation
    levels: list[int] = json_column(list)  # the policy levels this step pages
    reason: str  # why this round pages: "it was just reported", "nobody acknowledged it in time", …
    due_at: datetime = utc_column(nullable=False)
    status: StepStatus = enum_column(StepStatus, name="escalation_step_status", default=StepStatus.PENDING)
    claimed_at: datetime | None = utc_column()
    paged_at: datetime | None = utc_column()
    created_at: datetime = utc_column(nullable=False)


class Media(SQLModel, table=True):
    """A photo a patient sent (MMS), fetched from the provider and kept by us, so every web and worker host
    can show it; deleted from the provider once stored, and purged after the retention period."""

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int | None = Field(default=None, foreign_key="clinic.id", index=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    position: int = 0  # its place among the message's media
    content_type: str
    size: int
    data: bytes | None = Field(default=None, sa_column=Column(sa.LargeBinary, nullable=True))
    fetched_at: datetime = utc_column(nullable=False)
    purged_at: datetime | None = utc_column()


class WebhookToken(SQLModel, table=True):
    """A signed webhook's one-time token, kept for its replay window: the same signature twice is refused
    by every web process."""

    __tablename__ = "webhook_token"
    __table_args__ = (sa.UniqueConstraint("provider", "token", name="uq_webhook_token"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str
    token: str
    seen_at: datetime = utc_column(nullable=False, index=True)


class Heartbeat(SQLModel, table=True):
    """The last time a part of the system proved it was running ("dispatcher": beat and a worker)."""

    name: str = Field(primary_key=True)
    at: datetime = utc_column(nullable=False)


class Alarm(SQLModel, table=True):
    """A silent failure noticed by the watchdog: raised once (one active alarm per kind, whichever web
    process sees it first), cleared when the problem ends."""

    __table_args__ = (
        sa.Index(
            "uq_alarm_active_kind", "kind", unique=True,
            postgresql_where=sa.text("cleared_at IS NULL"), sqlite_where=sa.text("cleared_at IS NULL"),
        ),
    )  # fmt: skip

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    reason: str
    raised_at: datetime = utc_column(nullable=False)
    notified: int = 0  # how many people were told
    cleared_at: datetime | None = utc_column()


class LoginAttempt(SQLModel, table=True):
    """A failed dashboard login, so every web process sees the same rate limit."""

    __tablename__ = "login_attempt"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True)  # a hash of the address and the email tried
    at: datetime = utc_column(nullable=False, index=True)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int | None = Field(default=None, index=True)
    at: datetime = utc_column(nullable=False, index=True)
    actor: str  # "api", "worker", "twilio", "cli", a staff id
    action: str  # "booking.created", "message.failed", ...
    subject: str  # "booking:12", "message:40"
    detail: dict[str, Any] = json_column(dict)
