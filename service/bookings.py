"""Bookings: create (idempotently), reschedule, cancel, and correct a patient — each writes the outbox rows.

The care plan is expanded in the same transaction that stores the booking, so a booking never exists
without its schedule, and the plan is frozen into the booking so a later edit of the plan file does not
change messages already promised.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy import func, select, update
from sqlmodel import Session

from service import audit
from service.care_plans import load_plan
from service.core.plans import CarePlan, PlannedMessage, expand_plan
from service.models import (
    UNSENT,
    Booking,
    BookingStatus,
    Clinic,
    MessageStatus,
    Patient,
    ScheduledMessage,
)
from service.schemas import BookingIn, PatientPatch

S = MessageStatus


class BookingConflict(Exception):
    """The same external id was posted before with different content, or the booking cannot change."""


def request_digest(request: BookingIn) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_booking(session: Session, clinic_id: int, external_id: str) -> Booking | None:
    return session.scalar(
        select(Booking).where(Booking.clinic_id == clinic_id, Booking.external_id == external_id)
    )


def create_booking(
    session: Session, clinic: Clinic, request: BookingIn, *, now: datetime
) -> tuple[Booking, bool]:
    """Store a booking and its schedule. Returns (booking, created); the same request again is not new.

    ``request.patient.phone`` must already be in E.164 (the API normalises it with the clinic's country).
    Raises BookingConflict when the external id is taken by a different request.
    """
    digest = request_digest(request)
    existing = find_booking(session, clinic.id, request.external_id)  # type: ignore[arg-type]
    if existing is not None:
        if existing.request_digest != digest:
            raise BookingConflict(
                f"external_id {request.external_id!r} was already used for a different booking; "
                "use PATCH to reschedule or a new external_id"
            )
        return existing, False

    plan = load_plan(request.treatment)
    patient = _upsert_patient(session, clinic, request, now=now)
    booking = Booking(
        clinic_id=clinic.id,  # type: ignore[arg-type]
        patient_id=patient.id,  # type: ignore[arg-type]
        external_id=request.external_id,
        treatment=request.treatment,
        starts_at=request.starts_at,
        duration_minutes=request.duration_minutes or plan.default_duration_minutes,
        status=BookingStatus.ACTIVE,
        request_digest=digest,
        plan_snapshot=plan.to_snapshot(),
        created_at=now,
        updated_at=now,
    )
    session.add(booking)
    session.flush()
    for planned in _plan_for(booking, patient, now=now):
        session.add(_new_row(booking, planned, now=now))
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
    """Move every unsent message with the treatment. Sent ones stay sent."""
    if booking.status == BookingStatus.CANCELLED:
        raise BookingConflict("the booking is cancelled; create a new booking instead of rescheduling")
    patient = session.get(Patient, booking.patient_id)
    assert patient is not None
    booking.starts_at = starts_at
    booking.updated_at = now
    session.add(booking)
    _sync_rows(session, booking, patient, now=now)
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
    # A row a worker already took (queued) is cancelled here too; the send task re-checks the booking.
    session.execute(
        update(ScheduledMessage)
        .where(ScheduledMessage.booking_id == booking.id, ScheduledMessage.status.in_(list(UNSENT)))  # type: ignore[attr-defined]
        .values(status=S.CANCELLED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return booking


def update_patient(session: Session, patient: Patient, patch: PatientPatch, *, now: datetime) -> Patient:
    """Correct contact details. Messages are rendered at send time, so unsent ones follow on their own;
    a change of channels adds or cancels rows for every active booking.

    ``patch.phone`` must already be in E.164.
    """
    changes = patch.model_dump(exclude_unset=True)
    if "phone" in changes and changes["phone"] != patient.phone:
        patient.sms_unreachable_reason = None  # a new number deserves a new try
    for field, value in changes.items():
        setattr(patient, field, value)
    if "sms" in patient.channels and not patient.phone:
        raise ValueError("channels includes 'sms' but the patient has no phone")
    if "email" in patient.channels and not patient.email:
        raise ValueError("channels includes 'email' but the patient has no email")
    patient.updated_at = now
    session.add(patient)
    bookings = session.scalars(
        select(Booking).where(Booking.patient_id == patient.id, Booking.status == BookingStatus.ACTIVE)
    ).all()
    for booking in bookings:
        _sync_rows(session, booking, patient, now=now)
    audit.record(
        session,
        patient.clinic_id,
        "api",
        "patient.updated",
        f"patient:{patient.id}",
        now,
        fields=sorted(changes),
    )
    session.flush()
    return patient


def booking_messages(session: Session, booking_id: int) -> list[ScheduledMessage]:
    return list(
        session.scalars(
            select(ScheduledMessage)
            .where(ScheduledMessage.booking_id == booking_id)
            .order_by(ScheduledMessage.send_at, ScheduledMessage.step, ScheduledMessage.channel)  # type: ignore[arg-type]
        )
    )


def reachable_channels(patient: Patient) -> list[str]:
    """The channels the patient chose and we have an address for. Opt-outs are checked at send time."""
    channels = []
    if "sms" in patient.channels and patient.phone and patient.sms_consent:
        channels.append("sms")
    if "email" in patient.channels and patient.email:
        channels.append("email")
    return channels


def _plan_for(booking: Booking, patient: Patient, *, now: datetime) -> list[PlannedMessage]:
    return expand_plan(
        CarePlan.from_snapshot(booking.plan_snapshot),
        starts_at=booking.starts_at,
        duration_minutes=booking.duration_minutes,
        channels=reachable_channels(patient),
        risk_flags=patient.risk_flags,
        now=now,
    )


def _new_row(booking: Booking, planned: PlannedMessage, *, now: datetime) -> ScheduledMessage:
    return ScheduledMessage(
        clinic_id=booking.clinic_id,
        booking_id=booking.id,  # type: ignore[arg-type]
        patient_id=booking.patient_id,
        step=planned.step,
        channel=planned.channel,
        template=planned.template,
        send_at=planned.send_at,
        status=S.SKIPPED if planned.skipped else S.SCHEDULED,
        created_at=now,
        updated_at=now,
    )


def _sync_rows(session: Session, booking: Booking, patient: Patient, *, now: datetime) -> None:
    """Bring the unsent rows of a booking in line with its current time and the patient's channels."""
    planned = {(p.step, p.channel): p for p in _plan_for(booking, patient, now=now)}
    rows = {(r.step, r.channel): r for r in booking_messages(session, booking.id)}  # type: ignore[arg-type]
    movable = (S.SCHEDULED, S.QUEUED, S.SKIPPED)
    for key, row in rows.items():
        if row.status not in movable:
            continue  # already sent, failed, suppressed or cancelled: history stays as it was
        plan = planned.get(key)
        if plan is None:
            if row.fallback_for_id is None:
                row.status = S.CANCELLED  # the patient dropped this channel
        else:
            row.send_at = plan.send_at
            # A queued row goes back to scheduled: its pending task finds it no longer queued and does
            # nothing, and the dispatcher claims it again at the new time.
            row.status = S.SKIPPED if plan.skipped else S.SCHEDULED
        row.updated_at = now
        session.add(row)
    for key in planned.keys() - rows.keys():
        session.add(_new_row(booking, planned[key], now=now))


def _upsert_patient(session: Session, clinic: Clinic, request: BookingIn, *, now: datetime) -> Patient:
    """The same person booking again is the same patient: matched by name and phone (or email)."""
    details = request.patient
    query = select(Patient).where(
        Patient.clinic_id == clinic.id,
        func.lower(Patient.first_name) == details.first_name.lower(),
        func.lower(Patient.last_name) == details.last_name.lower(),
    )
    if details.phone:
        query = query.where(Patient.phone == details.phone)
    else:
        query = query.where(Patient.email == details.email)
    patient = session.scalars(query.order_by(Patient.id)).first()
    if patient is None:
        patient = Patient(clinic_id=clinic.id, created_at=now, **_patient_fields(request))  # type: ignore[arg-type]
    else:
        for field, value in _patient_fields(request).items():
            setattr(patient, field, value)
    patient.updated_at = now
    session.add(patient)
    session.flush()
    return patient


def _patient_fields(request: BookingIn) -> dict[str, object]:
    details = request.patient
    return {
        "first_name": details.first_name,
        "last_name": details.last_name,
        "phone": details.phone,
        "email": details.email,
        "timezone": details.timezone,
        "language": details.language,
        "channels": list(details.channels),
        "sms_consent": details.sms_consent,
        "risk_flags": list(details.risk_flags),
    }
