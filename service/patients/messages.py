"""What every message to a patient shares, whatever it is for: the address, language and context it is
written with, and the other channel it falls back to when one cannot reach the patient.

The purposes of the rows that go to patients (care messages, answers) build on ``PatientMessage``
(docs/architecture.md#purposes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select
from sqlmodel import Session, col

from service.core.enums import Channel, MessageKind, RecipientProblem
from service.core.phones import display_phone, emergency_number_for
from service.core.plans import CarePlan
from service.core.timezones import format_local
from service.models import Patient, ScheduledMessage
from service.outbox import lifecycle
from service.outbox.purpose import Address, Parties
from service.patients.consent import record_recipient_problem
from service.patients.links import unsubscribe_url
from service.patients.reach import address, contact_problem, missing_address
from service.settings import Settings


def clinic_context(parties: Parties) -> dict[str, Any]:
    """What any message may say about the clinic that sends it."""
    clinic = parties.clinic
    return {
        "clinic_name": clinic.name,
        "clinic_phone": display_phone(clinic.sms_from),
        "emergency_number": clinic.emergency_number,
        "include_stop_notice": False,
        "step": parties.row.step,
    }


class PatientMessage:
    """A row written to a patient (or, for an answer to a stranger, to the address they wrote from)."""

    kind: MessageKind

    def __init__(self, kind: MessageKind) -> None:
        self.kind = kind

    def recipient(self, session: Session, parties: Parties) -> str | None:
        if parties.row.to_address:
            return parties.row.to_address
        return address(parties.patient, parties.row.channel) if parties.patient else None

    def hold_reason(self, parties: Parties) -> str | None:
        """Why the row may not go now. An answer goes to whoever wrote, even after an opt-out or a cancel:
        they just wrote to us (docs/architecture.md#invariants); it needs only an address."""
        row, patient = parties.row, parties.patient
        if row.to_address:
            return None
        return missing_address(patient, row.channel) if patient else "the message has no recipient"

    def address(self, session: Session, parties: Parties, settings: Settings) -> Address | str:
        reason = self.hold_reason(parties)
        if reason:
            return reason
        row, booking, patient = parties.row, parties.booking, parties.patient
        context = clinic_context(parties)
        headers: dict[str, str] = {}
        if patient is not None:
            assert patient.id is not None
            context["emergency_number"] = emergency_number_for(
                patient.phone, fallback=parties.clinic.emergency_number
            )
            link = unsubscribe_url(patient.id, settings)
            headers = {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
            context.update(
                first_name=patient.first_name,
                unsubscribe_url=link,
                include_stop_notice=row.channel == Channel.SMS and first_sms(session, row, patient),
            )
            if booking is not None:
                context.update(
                    treatment=booking.treatment,
                    treatment_label=CarePlan.label_in_snapshot(booking.plan_snapshot, patient.language),
                    starts_at_local=format_local(booking.starts_at, patient.timezone, patient.language),
                )
        return Address(
            to=self.recipient(session, parties) or "",
            language=patient.language if patient else "en",
            context=context,
            headers=headers,
        )

    def may_go(self) -> Sequence[ColumnElement[bool]]:
        return ()

    def after_failure(
        self, session: Session, row: ScheduledMessage, *, problem: RecipientProblem | None, now: datetime
    ) -> None:
        # An answer written to a stranger's address has no other channel to try.
        patient = session.get(Patient, row.patient_id, populate_existing=True) if row.patient_id else None
        if patient is not None and not row.to_address:
            fall_back(session, row, patient, problem=problem, now=now)

    def after_suppressed(self, session: Session, parties: Parties, *, now: datetime) -> None:
        # Held back because SMS cannot reach the patient (not because they opted out): try email.
        patient, row = parties.patient, parties.row
        if patient is not None and row.channel == Channel.SMS and patient.sms_unreachable_reason:
            fall_back(session, row, patient, problem=None, now=now)


def fall_back(
    session: Session,
    row: ScheduledMessage,
    patient: Patient,
    *,
    problem: RecipientProblem | None,
    now: datetime,
) -> ScheduledMessage | None:
    """Record what a failure says about the patient's address, then queue the same message on the other
    channel when the patient can be reached there: an infection warning that cannot go by SMS still
    reaches them by email (and a bounced email by SMS), once per step. Returns the new row, if any."""
    if problem is not None:
        record_recipient_problem(session, patient, Channel(row.channel), problem, now=now)
    if contact_problem(patient, Channel(row.channel).other) is not None:
        return None
    return lifecycle.add_fallback(session, row, now=now)


def first_sms(session: Session, row: ScheduledMessage, patient: Patient) -> bool:
    """The first SMS a patient gets carries the STOP instructions; later ones do not."""
    return not session.scalar(_EARLIER_SMS, {"patient_id": patient.id, "message_id": row.id})


_EARLIER_SMS = (
    select(func.count())
    .select_from(ScheduledMessage)
    .where(
        col(ScheduledMessage.patient_id) == bindparam("patient_id"),
        col(ScheduledMessage.channel) == Channel.SMS,
        col(ScheduledMessage.status).in_(sorted(lifecycle.GONE)),
        col(ScheduledMessage.id) != bindparam("message_id"),
    )
)
