"""The booking API (docs/architecture.md#interface): thin routes over ``service.scheduling``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError

from service.api.deps import ClinicDep, Id, NowDep, SessionDep
from service.api.errors import responses
from service.api.schemas import BookingIn, BookingOut, BookingReschedule, MessageOut, PatientOut, PatientPatch
from service.core.enums import MessageStatus
from service.core.phones import InvalidPhone, parse_phone
from service.models import Booking, Patient, ScheduledMessage, id_of
from service.outbox import queries
from service.scheduling import bookings

router = APIRouter(prefix="/api/v1", tags=["bookings"])


def _field_error(loc: tuple[str, ...], message: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


def _normalise_phone(value: str | None, region: str, loc: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    try:
        return parse_phone(value, region=region)
    except InvalidPhone as exc:
        raise _field_error(loc, str(exc), value) from exc


def _document(session: SessionDep, booking: Booking) -> BookingOut:
    rows = queries.booking_rows(session, id_of(booking))
    return BookingOut(
        id=id_of(booking),
        external_id=booking.external_id,
        status=booking.status,
        treatment=booking.treatment,
        starts_at=booking.starts_at,
        duration_minutes=booking.duration_minutes,
        patient_id=booking.patient_id,
        messages=[_message(row) for row in rows],
    )


def _message(row: ScheduledMessage) -> MessageOut:
    return MessageOut(
        id=id_of(row),
        step=row.step,
        channel=row.channel,
        send_at=row.send_at,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        booking_id=row.booking_id,
        patient_id=row.patient_id,
    )


def _patient(patient: Patient) -> PatientOut:
    return PatientOut(
        id=id_of(patient),
        first_name=patient.first_name,
        last_name=patient.last_name,
        phone=patient.phone,
        email=patient.email,
        timezone=patient.timezone,
        language=patient.language,
        channels=patient.channels,
        sms_opted_out=patient.sms_opted_out_at is not None,
        email_opted_out=patient.email_opted_out_at is not None,
        sms_unreachable_reason=patient.sms_unreachable_reason,
    )


def _own_booking(session: SessionDep, clinic: ClinicDep, booking_id: Id) -> Booking:
    try:
        return bookings.get_booking(session, id_of(clinic), booking_id)
    except bookings.NotFound as exc:
        # Another clinic's booking is reported as missing, not forbidden: its existence is not ours to show.
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.post(
    "/bookings",
    response_model=BookingOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(200, 401, 409, 413, ok_model=BookingOut),
)
def create_booking(
    body: BookingIn, session: SessionDep, clinic: ClinicDep, now: NowDep, response: Response
) -> BookingOut:
    phone = _normalise_phone(body.patient.phone, clinic.country, ("body", "patient", "phone"))
    command = body.to_command(phone=phone)
    try:
        booking, created = bookings.create_booking(session, clinic, command, now=now)
        session.commit()
    except bookings.BookingConflict as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except IntegrityError:
        # The same booking posted twice at the same moment: the other request stored it first.
        session.rollback()
        try:
            booking, created = bookings.create_booking(session, clinic, command, now=now)
        except bookings.BookingConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        if created:  # pragma: no cover - only if the winner was rolled back in between
            session.commit()
    if not created:
        response.status_code = status.HTTP_200_OK
    return _document(session, booking)


@router.get("/bookings/{booking_id}", response_model=BookingOut, responses=responses(401, 404))
def get_booking(booking_id: Id, session: SessionDep, clinic: ClinicDep) -> BookingOut:
    return _document(session, _own_booking(session, clinic, booking_id))


@router.patch("/bookings/{booking_id}", response_model=BookingOut, responses=responses(401, 404, 409, 413))
def reschedule_booking(
    booking_id: Id, body: BookingReschedule, session: SessionDep, clinic: ClinicDep, now: NowDep
) -> BookingOut:
    booking = _own_booking(session, clinic, booking_id)
    try:
        bookings.reschedule_booking(session, booking, body.starts_at, now=now)
    except bookings.BookingConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    return _document(session, booking)


@router.post("/bookings/{booking_id}/cancel", response_model=BookingOut, responses=responses(401, 404, 413))
def cancel_booking(booking_id: Id, session: SessionDep, clinic: ClinicDep, now: NowDep) -> BookingOut:
    booking = _own_booking(session, clinic, booking_id)
    bookings.cancel_booking(session, booking, now=now)
    session.commit()
    return _document(session, booking)


@router.patch("/patients/{patient_id}", response_model=PatientOut, responses=responses(401, 404, 413))
def update_patient(
    patient_id: Id, body: PatientPatch, session: SessionDep, clinic: ClinicDep, now: NowDep
) -> PatientOut:
    try:
        patient = bookings.get_patient(session, id_of(clinic), patient_id)
    except bookings.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    phone = (
        _normalise_phone(body.phone, clinic.country, ("body", "phone"))
        if "phone" in body.model_fields_set
        else None
    )
    try:
        bookings.update_patient(session, patient, body.to_command(phone=phone), now=now)
    except ValueError as exc:
        session.rollback()
        raise _field_error(("body", "channels"), str(exc), body.channels) from exc
    session.commit()
    return _patient(patient)


@router.get("/messages", response_model=list[MessageOut], responses=responses(401))
def list_messages(
    session: SessionDep,
    clinic: ClinicDep,
    status_: Annotated[
        MessageStatus | None, Query(alias="status", description="e.g. failed, unknown, sent")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[MessageOut]:
    """Outbound messages, newest first; `?status=failed` is the list of messages staff must act on."""
    rows = queries.clinic_rows(session, id_of(clinic), status=status_, limit=limit)
    return [_message(row) for row in rows]
