"""Bookings become messages: create (idempotently), reschedule, cancel, and correct a patient — each
plans the booking's outbox rows in the same transaction.

The care plan is expanded in the transaction that stores the booking, so a booking never exists without
its schedule, and the plan is frozen into the booking so a later edit of the plan file does not change
messages already promised. Quiet hours are applied when planning, so the booking shows when each SMS will
really go; the send task checks them again when it is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from service import audit
from service.core.enums import BookingStatus, MessageStatus
from service.core.plans import CarePlan, PlannedMessage, expand_plan
from service.core.quiet_hours import QuietHours
from service.models import Booking, Clinic, Patient, ScheduledMessage, id_of
from service.outbox import lifecycle
from service.outbox.queries import booking_rows
from service.patients import records
from service.patients.reach import planned_channels
from service.patients.records import PatientChanges, PatientDetails
from service.scheduling.care_plans import load_plan
from service.scheduling.purpose import care_rows

S = MessageStatus


class BookingConflict(Exception):
    """The same external id was posted before with different content, or the booking cannot change."""


class NotFound(LookupError):
    """No such booking or patient at this clinic (another clinic's is reported the same way)."""


@dataclass(frozen=True)
class NewBooking:
    """A booking as a clinic's booking system sends it. ``request_digest`` identifies the request's
    content: the same external id with another digest is a conflict, with the same one a replay."""

    external_id: str
    treatment: str
    starts_at: datetime
    duration_minutes: int | None
    patient: PatientDetails
    request_digest: str


def get_booking(session: Session, clinic_id: int, booking_id: int) -> Booking:
    booking = session.get(Booking, booking_id)
    if booking is None or booking.clinic_id != clinic_id:
        raise NotFound(f"no booking {booking_id} at this clinic")
    return booking


def get_patient(session: Session, clinic_id: int, patient_id: int) -> Patient:
    patient = records.get(session, clinic_id, patient_id)
    if patient is None:
        raise NotFound(f"no patient {patient_id} at this clinic")
    return patient


def find_booking(session: Session, clinic_id: int, external_id: str) -> Booking | None:
    return session.scalar(
        select(Booking).where(col(Booking.clinic_id) == clinic_id, col(Booking.external_id) == external_id)
    )


def create_booking(
    session: Session, clinic: Clinic, request: NewBooking, *, now: datetime
) -> tuple[Booking, bool]:
    """Store a booking and its schedule. Returns (booking, created); the same request again is not new.

    Raises BookingConflict when the external id is taken by a different request.
    """
    existing = find_booking(session, id_of(clinic), request.external_id)
    if existing is not None:
        if existing.request_digest != request.request_digest:
            raise BookingConflict(
                f"external_id {request.external_id!r} was already used for a different booking; "
                "use PATCH to reschedule or a new external_id"
            )
        return existing, False

    plan = load_plan(request.treatment)
    patient = records.find_or_create(session, id_of(clinic), request.patient, now=now)
    booking = Booking(
        clinic_id=id_of(clinic),
        patient_id=id_of(patient),
        external_id=request.external_id,
        treatment=request.treatment,
        starts_at=request.starts_at,
        duration_minutes=request.duration_minutes or plan.default_duration_minutes,
        status=BookingStatus.ACTIVE,
        request_digest=request.request_digest,
        plan_snapshot=plan.to_snapshot(),
        created_at=now,
        updated_at=now,
    )
    session.add(booking)
    session.flush()
    lifecycle.schedule(session, care_rows(booking, _plan_for(booking, patient, clinic, now=now)), now=now)
    audit.record(
        session,
        clinic.id,
        "api",
        "booking.created",
        f"booking:{booking.id}",
        now,
        treatment=booking.treatment,
    )
    session.flush()
    return booking, True


def reschedule_booking(session: Session, booking: Booking, starts_at: datetime, *, now: datetime) -> Booking:
    """Move every message that has not left with the treatment. Sent ones stay sent."""
    if booking.status == BookingStatus.CANCELLED:
        raise BookingConflict("the booking is cancelled; create a new booking instead of rescheduling")
    patient = session.get(Patient, booking.patient_id)
    clinic = session.get(Clinic, booking.clinic_id)
    assert patient is not None and clinic is not None
    booking.starts_at = starts_at
    booking.updated_at = now
    session.add(booking)
    _sync_rows(session, booking, patient, clinic, now=now)
    audit.record(session, booking.clinic_id, "api", "booking.rescheduled", f"booking:{booking.id}", now)
    session.flush()
    return booking


def cancel_booking(session: Session, booking: Booking, *, now: datetime) -> Booking:
    """Cancel the booking and every message not yet handed to a provider. Cancelling twice is harmless."""
    if booking.status != BookingStatus.CANCELLED:
        booking.status = BookingStatus.CANCELLED
        booking.cancelled_at = now
        booking.updated_at = now
        session.add(booking)
        audit.record(session, booking.clinic_id, "api", "booking.cancelled", f"booking:{booking.id}", now)
    session.flush()  # the booking's status first: a send task starting now re-checks it in its UPDATE
    lifecycle.cancel_booking_rows(session, id_of(booking), now=now, reason="the booking was cancelled")
    return booking


def update_patient(session: Session, patient: Patient, changes: PatientChanges, *, now: datetime) -> Patient:
    """Correct contact details. Messages are rendered at send time, so unsent ones follow on their own;
    a change of channels adds or cancels rows for every active booking. Raises ValueError when a chosen
    channel is left without an address."""
    fields = records.apply_changes(session, patient, changes, now=now)
    clinic = session.get(Clinic, patient.clinic_id)
    assert clinic is not None
    bookings = session.scalars(
        select(Booking).where(
            col(Booking.patient_id) == patient.id, col(Booking.status) == BookingStatus.ACTIVE
        )
    ).all()
    for booking in bookings:
        _sync_rows(session, booking, patient, clinic, now=now)
    audit.record(
        session, patient.clinic_id, "api", "patient.updated", f"patient:{patient.id}", now, fields=fields
    )
    session.flush()
    return patient


def _plan_for(booking: Booking, patient: Patient, clinic: Clinic, *, now: datetime) -> list[PlannedMessage]:
    return expand_plan(
        CarePlan.from_snapshot(booking.plan_snapshot),
        starts_at=booking.starts_at,
        duration_minutes=booking.duration_minutes,
        channels=planned_channels(patient),
        risk_flags=patient.risk_flags,
        now=now,
        quiet_hours=QuietHours.of(clinic.quiet_start, clinic.quiet_end),
        timezone=patient.timezone,
    )


def _sync_rows(
    session: Session, booking: Booking, patient: Patient, clinic: Clinic, *, now: datetime
) -> None:
    """Bring the rows of a booking that have not left in line with its time and the patient's channels.

    Every change is a guarded transition: a row a worker has taken meanwhile is left alone (it is on its
    way), so a reschedule racing a send can never put a sent message back in the queue.
    """
    planned = {(p.step, p.channel): p for p in _plan_for(booking, patient, clinic, now=now)}
    rows: dict[tuple[str, str], ScheduledMessage] = {
        (r.step, r.channel): r for r in booking_rows(session, id_of(booking))
    }
    for key, row in rows.items():
        plan = planned.get(key)
        # A transition that changes nothing means the row has left (or was settled) meanwhile: its history
        # stays as it is, which is exactly what a reschedule or a dropped channel must not rewrite.
        if plan is None:
            if row.fallback_for_id is None:
                lifecycle.cancel(session, id_of(row), now=now, reason="the patient dropped this channel")
        else:
            lifecycle.reschedule(session, id_of(row), now=now, send_at=plan.send_at, skipped=plan.skipped)
    lifecycle.schedule(
        session, care_rows(booking, [planned[k] for k in planned.keys() - rows.keys()]), now=now
    )
