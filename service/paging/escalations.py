"""Escalations: opened by an alarming message (or joined by the patient's next one), acknowledged and
resolved by a person. Every change is audited with who and when."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session, col

from service import audit
from service.celery import SEND_MESSAGE, enqueue_after_commit
from service.core.enums import ALARMING, Channel, EscalationSubject, MessageKind, Severity
from service.core.escalation import DEFAULT_ACK_TIMEOUTS, Policy, first_round, round_after_severity_rise
from service.db import is_postgres
from service.models import (
    Booking,
    Clinic,
    Escalation,
    EscalationStep,
    Message,
    Patient,
    ScheduledMessage,
    StaffMember,
    id_of,
)
from service.outbox import lifecycle as outbox
from service.paging import lifecycle
from service.paging.lifecycle import UNRESOLVED
from service.paging.steps import add_step
from service.patients.reach import missing_address

log = logging.getLogger(__name__)


class NotFound(LookupError):
    """No such escalation at this clinic (another clinic's is reported the same way)."""


def clinic_policy(session: Session, clinic: Clinic) -> Policy:
    staff = session.execute(
        select(col(StaffMember.id), col(StaffMember.level)).where(
            col(StaffMember.clinic_id) == clinic.id,
            col(StaffMember.active).is_(True),
        )
    ).all()
    return Policy.build(
        [(int(i), int(level)) for i, level in staff], {**DEFAULT_ACK_TIMEOUTS, **clinic.ack_timeouts}
    )


def has_first_level(session: Session, clinic: Clinic) -> bool:
    """Whether an emergency would reach anyone now (the answer to the patient must only promise that)."""
    return not clinic_policy(session, clinic).empty


def open_for_message(
    session: Session,
    *,
    clinic: Clinic,
    patient: Patient | None,
    booking: Booking | None,
    message: Message,
    severity: Severity,
    now: datetime,
) -> Escalation:
    """Open an escalation for an alarming message, or add the message to the patient's unresolved one.

    A rise in severity pages the levels last paged again at once and restarts the timer; an escalation
    already acknowledged is opened again only when the severity rises (someone has it, but not this bad).
    A resolved escalation is never opened again: a report that finds the patient's escalation resolved —
    even one resolved between the moment it was read and the moment the report joins it — opens a new one.
    """
    assert severity in ALARMING
    if patient is not None:
        if is_postgres(session):
            # Two alarming texts from one patient at the same moment join one escalation, not two. FOR NO
            # KEY UPDATE, not FOR UPDATE: an acknowledgement that holds the escalation and adds the answer
            # to this patient (its foreign key takes a key-share lock on the patient) must not wait for a
            # report that is waiting for the escalation — PostgreSQL would abort one of them as a deadlock.
            session.execute(
                select(col(Patient.id)).where(col(Patient.id) == patient.id).with_for_update(key_share=True)
            )
        existing = session.scalar(
            select(Escalation)
            .where(col(Escalation.patient_id) == patient.id, col(Escalation.status).in_(sorted(UNRESOLVED)))
            .order_by(col(Escalation.id).desc())
            .limit(1)
            .execution_options(populate_existing=True)
        )
        if existing is not None and _add_report(session, existing, severity, now=now):
            message.escalation_id = existing.id
            return existing
    escalation = lifecycle.open_escalation(
        session,
        clinic_id=id_of(clinic),
        subject=EscalationSubject.REPLY,
        patient_id=patient.id if patient else None,
        booking_id=booking.id if booking else None,
        severity=severity,
        policy=clinic_policy(session, clinic).to_snapshot(),
        now=now,
    )
    message.escalation_id = escalation.id
    planned = first_round(Policy.from_snapshot(escalation.policy), now=now)
    if planned is not None:
        add_step(session, escalation, planned, now=now)
    else:
        log.warning(
            "escalation %s opened at clinic %s, which has no level-1 staff to page", escalation.id, clinic.id
        )
    audit.record(
        session, clinic.id, "worker", "escalation.opened", f"escalation:{escalation.id}", now,
        severity=str(severity), ack_code=escalation.ack_code,
    )  # fmt: skip
    return escalation


def _add_report(session: Session, escalation: Escalation, severity: Severity, *, now: datetime) -> bool:
    """A new report joins the escalation, paging again if it is worse. False when the escalation was
    resolved since it was read: the report must open a new one (a closed escalation pages nobody)."""
    if Severity(severity).rank > Severity(escalation.severity).rank and lifecycle.raise_severity(
        session, escalation, severity, now=now
    ):
        # Read under the lock the raise took, so a round that ran a moment earlier is counted.
        last_paged = session.scalar(
            select(EscalationStep)
            .where(
                col(EscalationStep.escalation_id) == escalation.id, col(EscalationStep.paged_at).is_not(None)
            )
            .order_by(col(EscalationStep.number).desc())
            .limit(1)
        )
        planned = round_after_severity_rise(
            Policy.from_snapshot(escalation.policy),
            paged=tuple(last_paged.levels) if last_paged else (),
            now=now,
        )
        if planned is not None:
            add_step(session, escalation, planned, now=now)
        where = (escalation.clinic_id, "worker", "escalation.severity_rose", f"escalation:{escalation.id}")
        audit.record(session, *where, now, to=severity)
        return True
    # No worse, or raised to this severity by another report already: it joins, unless resolved meanwhile.
    return lifecycle.join(session, escalation, now=now)


def get(session: Session, clinic_id: int, escalation_id: int) -> Escalation:
    escalation = session.get(Escalation, escalation_id, populate_existing=True)
    if escalation is None or escalation.clinic_id != clinic_id:
        raise NotFound(f"no escalation {escalation_id} at this clinic")
    return escalation


def by_ack_code(session: Session, clinic_id: int, code: str) -> Escalation | None:
    return session.scalar(
        select(Escalation).where(col(Escalation.clinic_id) == clinic_id, col(Escalation.ack_code) == code)
    )


def may_acknowledge(session: Session, escalation: Escalation, staff: StaffMember) -> bool:
    """An ACK by SMS counts only from an active staff member of the escalation's clinic who was paged for
    it, or whose level is at least the highest level paged so far: a code is no key for anyone else."""
    if not staff.active or staff.clinic_id != escalation.clinic_id:
        return False
    paged = session.scalar(
        select(func.count())
        .select_from(ScheduledMessage)
        .where(
            col(ScheduledMessage.escalation_id) == escalation.id,
            col(ScheduledMessage.kind) == MessageKind.PAGE,
            col(ScheduledMessage.staff_member_id) == staff.id,
        )
    )
    if paged:
        return True
    levels = session.scalars(
        select(col(EscalationStep.levels)).where(
            col(EscalationStep.escalation_id) == escalation.id, col(EscalationStep.paged_at).is_not(None)
        )
    ).all()
    highest = max((level for step in levels for level in step), default=None)
    return highest is not None and staff.level >= highest


def acknowledge(
    session: Session, escalation: Escalation, *, by: StaffMember | None, via: str, now: datetime
) -> bool:
    """Stop paging at once and tell the patient a clinician has their message. False when it was not open
    (already acknowledged or resolved): nothing changes then, and ``escalation`` says by whom. The caller
    commits."""
    if not lifecycle.acknowledge(session, escalation, by_id=by.id if by else None, via=via, now=now):
        return False
    _tell_patient(session, escalation, now=now)
    audit.record(
        session, escalation.clinic_id, f"staff:{by.id}" if by else via, "escalation.acknowledged",
        f"escalation:{escalation.id}", now, via=via,
    )  # fmt: skip
    return True


def resolve(
    session: Session, escalation: Escalation, *, by: StaffMember | None, note: str, via: str, now: datetime
) -> bool:
    """Close it with a note; paging stops if it had not been acknowledged. False when already resolved."""
    if not lifecycle.resolve(session, escalation, by_id=by.id if by else None, note=note, now=now):
        return False
    audit.record(
        session, escalation.clinic_id, f"staff:{by.id}" if by else via, "escalation.resolved",
        f"escalation:{escalation.id}", now, via=via,
    )  # fmt: skip
    return True


def _tell_patient(session: Session, escalation: Escalation, *, now: datetime) -> None:
    """ "A clinician has your message": by SMS where we can, else by email; an answer to the patient's own
    message, so it goes even after an opt-out."""
    if escalation.patient_id is None or escalation.booking_id is None:
        return
    patient = session.get(Patient, escalation.patient_id)
    assert patient is not None
    channel = Channel.SMS if not missing_address(patient, Channel.SMS) else Channel.EMAIL
    if missing_address(patient, channel):
        return
    row = outbox.queue_now(
        session,
        outbox.NewRow(
            kind=MessageKind.REPLY,
            clinic_id=escalation.clinic_id,
            booking_id=escalation.booking_id,
            patient_id=patient.id,
            # One answer per acknowledgement: an escalation is acknowledged again only after its severity
            # rose, so the severity tells them apart (the same step twice would break the outbox's unique
            # key).
            step=f"acknowledged-{escalation.id}-{escalation.severity}",
            channel=channel,
            template="reply_acknowledged",
            send_at=now,
        ),
        now=now,
    )
    assert row is not None
    enqueue_after_commit(session, SEND_MESSAGE, row.id)
