"""Care messages: the steps of a booking's care plan. They go only while the booking stands and the patient
still wants them on that channel, and an SMS waits out the night in the patient's timezone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cache

from sqlalchemy import ColumnElement, and_, exists, not_, or_
from sqlmodel import Session, col

from service.core.enums import BookingStatus, Channel, MessageKind
from service.core.plans import PlannedMessage
from service.models import Booking, Patient, ScheduledMessage
from service.outbox.lifecycle import NewRow
from service.outbox.purpose import Address, Parties
from service.patients.messages import PatientMessage
from service.patients.reach import contact_problem
from service.settings import Settings

SM = ScheduledMessage


def care_rows(booking: Booking, planned: Iterable[PlannedMessage]) -> list[NewRow]:
    """The outbox rows for a booking's planned care messages."""
    assert booking.id is not None
    return [
        NewRow(
            kind=MessageKind.CARE,
            clinic_id=booking.clinic_id,
            booking_id=booking.id,
            patient_id=booking.patient_id,
            step=message.step,
            channel=Channel(message.channel),
            template=message.template,
            send_at=message.send_at,
            skipped=message.skipped,
        )
        for message in planned
    ]


class CareMessage(PatientMessage):
    def __init__(self) -> None:
        super().__init__(MessageKind.CARE)

    def hold_reason(self, parties: Parties) -> str | None:
        booking, patient = parties.booking, parties.patient
        assert booking is not None and patient is not None, "a care message belongs to a booking"
        if booking.status == BookingStatus.CANCELLED:
            return "the booking was cancelled"
        return contact_problem(patient, parties.row.channel)

    def address(self, session: Session, parties: Parties, settings: Settings) -> Address | str:
        found = super().address(session, parties, settings)
        if isinstance(found, str) or parties.row.channel != Channel.SMS or parties.patient is None:
            return found
        # A text wakes whoever it reaches; an email waits in the inbox.
        return replace(found, quiet_hours_zone=parties.patient.timezone)

    def may_go(self) -> Sequence[ColumnElement[bool]]:
        return _still_wanted()


@cache
def _still_wanted() -> tuple[ColumnElement[bool], ...]:
    """The booking is not cancelled and the patient has not opted out of the row's channel — the checks
    a STOP or a cancel committed a moment before the send must win."""
    booking_cancelled = exists().where(
        col(Booking.id) == col(SM.booking_id), col(Booking.status) == BookingStatus.CANCELLED
    )
    opted_out = exists().where(
        col(Patient.id) == col(SM.patient_id),
        or_(
            and_(col(SM.channel) == Channel.SMS, col(Patient.sms_opted_out_at).is_not(None)),
            and_(col(SM.channel) == Channel.EMAIL, col(Patient.email_opted_out_at).is_not(None)),
        ),
    )
    return (not_(or_(booking_cancelled, opted_out)),)
