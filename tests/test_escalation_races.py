"""Races on the escalation row, where they happen: on PostgreSQL, with real concurrent sessions, each side
held at the exact statement of the race by a pause on the SQL (never by sleeping). SQLite serialises
writers and hides every one of these, so they run in the PostgreSQL pass only.

Each ends with the row's invariants: a resolved escalation stays resolved with no active step and no new
pages; an acknowledged one is not paged again unless its severity rose; the active step is the one step
still waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import count
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from service import db
from service.channels.base import InboundMessage
from service.core.enums import Channel, EscalationStatus, MessageKind, StepStatus
from service.models import (
    AuditEvent,
    Escalation,
    EscalationStep,
    Message,
    ScheduledMessage,
    StaffMember,
    id_of,
)
from service.paging import escalations, steps
from tests import test_paging
from tests.conftest import TEST_DATABASE_URL
from tests.inbound import answer_text, deliver
from tests.test_inbound_sms import PATIENT
from tests.test_paging import DOCTOR, NURSE, pages_to, tick
from tests.test_races import at_the_same_moment_each, paused_before

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL,
    reason="races need PostgreSQL (SQLite serialises writers): the PostgreSQL pass runs them",
)

URGENT = "there's pus coming out and I have a fever"
URGENT_AGAIN = "the pus is still coming out and the fever is still there"
EMERGENCY = "my throat is closing and my lips are swelling"
_sid = count()

# The clinic of tests/test_paging.py (Nia Nurse at level 1, Dan Doctor at level 2) and its patient's booking.
clinic_with_staff = test_paging.clinic_with_staff
booked = test_paging.booked
channels = test_paging.channels


class Side:
    """One side of a race: an action in a thread of its own (each action opens its own session), with its
    result or its error kept for the test's thread. The thread exists before it starts, so a pause can
    name it before it runs its first statement."""

    def __init__(self, action: Callable[[], Any]) -> None:
        self._action = action
        self._result: Any = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._result = self._action()
        except BaseException as exc:  # re-raised in the test's thread by result()
            self._error = exc

    def result(self) -> Any:
        self.thread.join(60)
        assert not self.thread.is_alive(), "this side of the race never finished"
        if self._error is not None:
            raise self._error
        return self._result


def held_before(statement: str, side: Side, meanwhile: Callable[[], Any]) -> Any:
    """Start ``side``, hold it just before its first ``statement``, run ``meanwhile`` to its commit in
    the test's thread, then let ``side`` go on; returns what ``meanwhile`` returned."""
    with paused_before(statement, in_thread=lambda: side.thread) as resume:
        side.thread.start()
        assert resume.reached.wait(30), f"{statement!r} was never reached"  # type: ignore[attr-defined]
        done = meanwhile()
        resume.set()
        side.result()
    return done


# ---- the actions, each in its own session, committed, as a webhook or a dashboard request would -----


def report(clinic: Any, clock: Any, body: str, *, sender: str = PATIENT) -> Message:
    """An SMS reaches the webhook: stored, triaged, joined to (or opening) an escalation; committed.
    From a staff phone, it is a command ("ACK 42"): ``answer`` reads what we texted back."""
    inbound = InboundMessage(
        channel=Channel.SMS, provider_id=f"SM{next(_sid):032d}", sender=sender, recipient=clinic.sms_from,
        body=body, new_text=body,
    )  # fmt: skip
    with Session(db.get_engine(), expire_on_commit=False) as session:
        received = deliver(session, inbound, now=clock.now)
        session.commit()
        assert received.message is not None
        return received.message


def answer(message: Message) -> str:
    """What we texted back to a message (a staff command's answer goes through the outbox too)."""
    with Session(db.get_engine(), expire_on_commit=False) as session:
        return answer_text(session, id_of(message)) or ""


def escalation_of(message: Message) -> int:
    assert message.escalation_id is not None, "the report opened or joined no escalation"
    return message.escalation_id


def acknowledge_in_dashboard(escalation_id: int, clinic: Any, clock: Any, *, by: str = NURSE) -> bool:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        staff = session.scalars(select(StaffMember).where(StaffMember.phone == by)).one()
        found = escalations.get(session, clinic.id, escalation_id)
        done = escalations.acknowledge(session, found, by=staff, via="dashboard", now=clock.now)
        session.commit()
        return done


def run_step(step_id: int, clock: Any) -> str:
    """The step's task, as a worker runs it."""
    with Session(db.get_engine(), expire_on_commit=False) as session:
        outcome = steps.run_step(session, step_id, now=clock.now)
        session.commit()
        return outcome


def resolve_in_dashboard(escalation_id: int, clinic: Any, clock: Any, *, by: str = NURSE) -> bool:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        staff = session.scalars(select(StaffMember).where(StaffMember.phone == by)).one()
        found = escalations.get(session, clinic.id, escalation_id)
        done = escalations.resolve(
            session, found, by=staff, note="called her, antibiotics", via="dashboard", now=clock.now
        )
        session.commit()
        return done


# ---- what the database says -----------------------------------------------------------------------------


def fresh(session: Session, escalation_id: int) -> Escalation:
    session.expire_all()
    found = session.get(Escalation, escalation_id)
    assert found is not None
    return found


def steps_of(session: Session, escalation_id: int) -> list[EscalationStep]:
    return list(
        session.scalars(
            select(EscalationStep)
            .where(EscalationStep.escalation_id == escalation_id)
            .order_by(EscalationStep.number)
        )
    )


def pages_of(session: Session, escalation_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ScheduledMessage)
            .where(ScheduledMessage.escalation_id == escalation_id, ScheduledMessage.kind == MessageKind.PAGE)
        )
        or 0
    )


def told_patient(session: Session, twilio: Any) -> int:
    """Answers "a clinician has your message": rows in the outbox, which must match the SMS that left."""
    rows = int(
        session.scalar(
            select(func.count())
            .select_from(ScheduledMessage)
            .where(ScheduledMessage.template == "reply_acknowledged")
        )
        or 0
    )
    sent = sum(
        1 for m in twilio.messages if m["to"] == PATIENT and "a clinician has your message" in m["body"]
    )
    assert sent == rows, f"{rows} answers in the outbox, {sent} sent"
    return rows


def due_step(session: Session, escalation_id: int, clock: Any) -> int:
    """The escalation's active step, due now (a worker may run it claimed or not)."""
    row = fresh(session, escalation_id)
    assert row.active_step_id is not None
    step = session.get(EscalationStep, row.active_step_id)
    assert step is not None and step.due_at <= clock.now and step.status == StepStatus.PENDING
    return row.active_step_id


def audited(session: Session, escalation_id: int, action: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == action, AuditEvent.subject == f"escalation:{escalation_id}")
        )
        or 0
    )


def assert_consistent(session: Session, escalation_id: int) -> Escalation:
    """The row agrees with itself and with its steps, whatever state it is in."""
    row = fresh(session, escalation_id)
    steps = steps_of(session, escalation_id)
    waiting = [s.id for s in steps if s.status in (StepStatus.PENDING, StepStatus.CLAIMED)]
    assert len({s.number for s in steps}) == len(steps), "two steps share a number"
    state = f"escalation {row.id} is {row.status} ({row.severity})"
    if row.status == EscalationStatus.RESOLVED:
        assert row.resolved_at is not None and row.resolution_note, f"{state} with no resolution"
        assert row.active_step_id is None, f"{state}, yet step {row.active_step_id} is active"
        assert waiting == [], f"{state}, yet steps {waiting} wait to page"
    elif row.status == EscalationStatus.ACKNOWLEDGED:
        assert row.acknowledged_at is not None and row.acknowledged_via, f"{state} by nobody"
        assert row.resolved_at is None and row.resolution_note is None, f"{state} and resolved"
        assert row.active_step_id is None, f"{state}, yet step {row.active_step_id} is active"
        assert waiting == [], f"{state}, yet steps {waiting} wait to page"
    else:
        assert row.resolved_at is None and row.resolved_by_id is None and row.resolution_note is None, (
            f"{state}, yet resolved at {row.resolved_at:%H:%M} with the note {row.resolution_note!r}"
        )
        assert row.acknowledged_at is None and row.acknowledged_by_id is None, f"{state} and acknowledged"
        # The active step is the one step still waiting (none when nobody is left to page).
        assert waiting == ([row.active_step_id] if row.active_step_id is not None else []), (
            f"{state}: active step {row.active_step_id}, steps {waiting} waiting"
        )
    return row


# ---- raise vs resolve: the defect of issue 13 --------------------------------------------------------------


@pytest.mark.parametrize("state", ["open", "acknowledged"])
@pytest.mark.parametrize(("body", "severity"), [(EMERGENCY, "emergency"), (URGENT_AGAIN, "urgent")])
def test_a_report_racing_a_resolve_opens_a_new_escalation_and_never_reopens_the_resolved_one(
    state, body, severity, api, booked, clinic_with_staff, session, clock, channels, providers
):
    """The report read the escalation as unresolved; staff resolve it before the report writes. Before the
    row had one owner, a worse report then wrote ``status=open`` over the resolution (when it had been
    acknowledged) or left a resolved row with a new active step (when it was open); a report of the same
    severity joined the resolved escalation. Either way the new report paged nobody."""
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    first = escalation_of(report(clinic, clock, URGENT))
    tick(session, clock, channels)
    if state == "acknowledged":
        assert acknowledge_in_dashboard(first, clinic, clock)
        tick(session, clock, channels)
    assert len(pages_to(twilio, NURSE)) == 1
    clock.advance(seconds=60)

    reporter = Side(lambda: report(clinic, clock, body))
    resolved = held_before(
        "UPDATE escalation SET",
        reporter,
        lambda: resolve_in_dashboard(first, clinic, clock),
    )
    assert resolved is True
    message = reporter.result()
    tick(session, clock, channels)

    old = assert_consistent(session, first)
    assert old.status == EscalationStatus.RESOLVED and old.severity == "urgent"
    assert pages_of(session, first) == 2  # its first round's SMS and email, nothing since
    assert message.escalation_id != old.id
    new = assert_consistent(session, escalation_of(message))
    assert new.status == EscalationStatus.OPEN and new.severity == severity
    assert new.ack_code != old.ack_code and new.active_step_id is not None
    nurse = pages_to(twilio, NURSE)
    assert len(nurse) == 2 and f"ACK {new.ack_code}" in nurse[-1]["body"]  # the new report pages


# ---- acknowledge vs raise ------------------------------------------------------------------------------


def test_a_worse_report_held_while_staff_acknowledge_opens_it_again_and_pages_once(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    """The nurse took it as urgent; the report that it is an emergency, read as open a moment before,
    still pages again: someone has it, but not this bad."""
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    first = escalation_of(report(clinic, clock, URGENT))
    tick(session, clock, channels)
    clock.advance(seconds=60)

    reporter = Side(lambda: report(clinic, clock, EMERGENCY))
    acked = held_before(
        "UPDATE escalation SET",
        reporter,
        lambda: acknowledge_in_dashboard(first, clinic, clock),
    )
    assert acked is True
    message = reporter.result()
    tick(session, clock, channels)

    assert message.escalation_id == first
    row = assert_consistent(session, first)
    assert row.status == EscalationStatus.OPEN and row.severity == "emergency"
    assert [s.reason for s in steps_of(session, first) if s.paged_at] == [
        "it was just reported",
        "its severity rose",
    ]
    assert len(pages_to(twilio, NURSE)) == 2 and pages_to(twilio, DOCTOR) == []
    assert told_patient(session, twilio) == 1
    # Acknowledged again, as an emergency now: the patient is told again, once, and paging stops.
    assert acknowledge_in_dashboard(first, clinic, clock, by=DOCTOR)
    tick(session, clock, channels)
    assert told_patient(session, twilio) == 2
    for _ in range(3):
        clock.advance(seconds=601)
        tick(session, clock, channels)
    assert len(pages_to(twilio, NURSE)) == 2 and pages_to(twilio, DOCTOR) == []
    assert assert_consistent(session, first).status == EscalationStatus.ACKNOWLEDGED


def test_an_acknowledgement_held_while_a_worse_report_pages_again_stops_that_paging(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    """The other order: the worse report commits first and pages again; the acknowledgement, which read
    the escalation a moment before, still takes it — as the emergency it now is — and nobody is paged
    after it."""
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    first = escalation_of(report(clinic, clock, URGENT))
    tick(session, clock, channels)
    clock.advance(seconds=60)

    acknowledging = Side(lambda: acknowledge_in_dashboard(first, clinic, clock))
    message = held_before("UPDATE escalation SET", acknowledging, lambda: report(clinic, clock, EMERGENCY))
    assert acknowledging.result() is True
    tick(session, clock, channels)

    assert message.escalation_id == first
    row = assert_consistent(session, first)
    assert row.status == EscalationStatus.ACKNOWLEDGED and row.severity == "emergency"
    for _ in range(3):
        clock.advance(seconds=601)
        tick(session, clock, channels)
    assert len(pages_to(twilio, NURSE)) == 2 and pages_to(twilio, DOCTOR) == []
    assert told_patient(session, twilio) == 1


def test_a_report_of_the_same_severity_held_while_staff_acknowledge_pages_nobody(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    first = escalation_of(report(clinic, clock, URGENT))
    tick(session, clock, channels)

    reporter = Side(lambda: report(clinic, clock, URGENT_AGAIN))
    acked = held_before(
        "UPDATE escalation SET",
        reporter,
        lambda: acknowledge_in_dashboard(first, clinic, clock),
    )
    assert acked is True
    assert reporter.result().escalation_id == first
    for _ in range(3):
        clock.advance(seconds=601)
        tick(session, clock, channels)
    row = assert_consistent(session, first)
    assert row.status == EscalationStatus.ACKNOWLEDGED and row.severity == "urgent"
    assert len(pages_to(twilio, NURSE)) == 1 and pages_to(twilio, DOCTOR) == []


# ---- step run vs acknowledge ---------------------------------------------------------------------------


def test_a_step_held_while_staff_acknowledge_pages_nobody(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    """The worker read level 2's step as active and due; the nurse acknowledges before it pages."""
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    first = escalation_of(report(clinic, clock, URGENT))
    tick(session, clock, channels)
    clock.advance(seconds=601)
    step_id = due_step(session, first, clock)

    runner = Side(lambda: run_step(step_id, clock))
    acked = held_before(
        "UPDATE escalation SET",
        runner,
        lambda: acknowledge_in_dashboard(first, clinic, clock),
    )
    assert acked is True
    assert runner.result() == "not_active"
    for _ in range(3):
        tick(session, clock, channels)
        clock.advance(seconds=601)

    row = assert_consistent(session, first)
    assert row.status == EscalationStatus.ACKNOWLEDGED
    assert {s.id: s.status for s in steps_of(session, first)}[step_id] == StepStatus.SUPERSEDED
    assert pages_to(twilio, DOCTOR) == [] and len(pages_to(twilio, NURSE)) == 1
    assert told_patient(session, twilio) == 1


def test_an_acknowledgement_held_while_a_step_pages_stops_every_later_step(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    """The other order: level 2 is paged first; the acknowledgement that follows ends the paging."""
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    first = escalation_of(report(clinic, clock, URGENT))
    tick(session, clock, channels)
    clock.advance(seconds=601)
    step_id = due_step(session, first, clock)

    acknowledging = Side(lambda: acknowledge_in_dashboard(first, clinic, clock))
    assert held_before("UPDATE escalation SET", acknowledging, lambda: run_step(step_id, clock)) == "paged"
    assert acknowledging.result() is True
    for _ in range(3):
        tick(session, clock, channels)
        clock.advance(seconds=601)

    row = assert_consistent(session, first)
    assert row.status == EscalationStatus.ACKNOWLEDGED
    assert [s.status for s in steps_of(session, first)] == [
        StepStatus.PAGED,
        StepStatus.PAGED,
        StepStatus.SUPERSEDED,
    ]
    assert len(pages_to(twilio, DOCTOR)) == 1 and len(pages_to(twilio, NURSE)) == 1
    assert told_patient(session, twilio) == 1


# ---- two raises at once --------------------------------------------------------------------------------


def test_two_worse_reports_at_the_same_moment_raise_the_severity_once_with_one_consistent_step(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    for attempt in range(4):  # each on a new escalation: the one before is resolved
        opened = escalation_of(report(clinic, clock, URGENT))
        tick(session, clock, channels)
        clock.advance(seconds=30)
        both = at_the_same_moment_each([lambda: report(clinic, clock, EMERGENCY)] * 2)
        tick(session, clock, channels)

        assert {m.escalation_id for m in both} == {opened}
        row = assert_consistent(session, opened)
        assert row.status == EscalationStatus.OPEN and row.severity == "emergency"
        reasons = [s.reason for s in steps_of(session, opened)]
        assert reasons.count("its severity rose") == 1, reasons
        assert audited(session, opened, "escalation.severity_rose") == 1
        assert len(pages_to(twilio, NURSE)) == 2 * (attempt + 1)  # its first page and one re-page
        assert resolve_in_dashboard(opened, clinic, clock)
        clock.advance(hours=1)  # past the burst window: the next urgent report is read on its own
    assert pages_to(twilio, DOCTOR) == []


# ---- ACK by SMS vs ACK in the dashboard ----------------------------------------------------------------


@pytest.mark.parametrize("held", ["sms", "dashboard"])
def test_an_ack_by_sms_and_one_in_the_dashboard_record_one_acknowledgement_and_tell_the_patient_once(
    held, api, booked, clinic_with_staff, session, clock, channels, providers
):
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    first = escalation_of(report(clinic, clock, URGENT))
    tick(session, clock, channels)
    code = fresh(session, first).ack_code
    clock.advance(seconds=45)

    def by_sms() -> str | None:
        return answer(report(clinic, clock, f"ACK {code}", sender=NURSE))

    def in_dashboard() -> bool:
        return acknowledge_in_dashboard(first, clinic, clock, by=DOCTOR)

    if held == "sms":
        sms = Side(by_sms)
        assert held_before("UPDATE escalation SET", sms, in_dashboard) is True
        assert "already acknowledged by Dan Doctor" in sms.result()
    else:
        dashboard = Side(in_dashboard)
        assert f"{code} acknowledged" in held_before("UPDATE escalation SET", dashboard, by_sms)
        assert dashboard.result() is False
    tick(session, clock, channels)

    row = assert_consistent(session, first)
    assert row.status == EscalationStatus.ACKNOWLEDGED
    assert row.acknowledged_via == ("dashboard" if held == "sms" else "sms")
    assert audited(session, first, "escalation.acknowledged") == 1
    assert told_patient(session, twilio) == 1


def test_acks_by_sms_and_in_the_dashboard_at_the_same_moment_record_one_acknowledgement_each_time(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    for attempt in range(4):  # each on a new escalation: the one before is resolved
        opened = escalation_of(report(clinic, clock, URGENT))
        tick(session, clock, channels)
        code = fresh(session, opened).ack_code
        sms, dashboard = at_the_same_moment_each(
            [
                lambda code=code: answer(report(clinic, clock, f"ACK {code}", sender=NURSE)),
                lambda opened=opened: acknowledge_in_dashboard(opened, clinic, clock, by=DOCTOR),
            ]
        )
        tick(session, clock, channels)
        row = assert_consistent(session, opened)
        assert row.status == EscalationStatus.ACKNOWLEDGED
        assert (f"{code} acknowledged" in sms) != dashboard, (sms, dashboard)  # exactly one of them took it
        assert row.acknowledged_via == ("dashboard" if dashboard else "sms")
        assert audited(session, opened, "escalation.acknowledged") == 1
        assert told_patient(session, twilio) == attempt + 1
        assert resolve_in_dashboard(opened, clinic, clock)
        clock.advance(seconds=30)
