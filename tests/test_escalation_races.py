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
from service.models import AuditEvent, Escalation, EscalationStep, Message, ScheduledMessage, StaffMember
from service.paging import escalations
from service.replies.receive import receive
from service.triage.loader import load_lexicon
from tests import test_paging
from tests.conftest import TEST_DATABASE_URL
from tests.test_inbound_sms import PATIENT
from tests.test_paging import NURSE, pages_to, tick
from tests.test_races import paused_before

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL,
    reason="races need PostgreSQL (SQLite serialises writers): the PostgreSQL pass runs them",
)

URGENT = "there's pus coming out and I have a fever"
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
    """An SMS reaches the webhook: stored, triaged, joined to (or opening) an escalation; committed."""
    inbound = InboundMessage(
        channel=Channel.SMS, provider_id=f"SM{next(_sid):032d}", sender=sender, recipient=clinic.sms_from,
        body=body, new_text=body,
    )  # fmt: skip
    with Session(db.get_engine(), expire_on_commit=False) as session:
        received = receive(session, inbound, now=clock.now, lexicon=load_lexicon())
        session.commit()
        assert received.message is not None
        return received.message


def acknowledge_in_dashboard(escalation_id: int, clinic: Any, clock: Any, *, by: str = NURSE) -> bool:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        staff = session.scalars(select(StaffMember).where(StaffMember.phone == by)).one()
        found = escalations.get(session, clinic.id, escalation_id)
        done = escalations.acknowledge(session, found, by=staff, via="dashboard", now=clock.now)
        session.commit()
        return done


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
            .order_by(EscalationStep.number)  # type: ignore[arg-type]
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
    if row.status == EscalationStatus.RESOLVED:
        assert row.resolved_at is not None and row.resolution_note
        assert row.active_step_id is None and waiting == []
    elif row.status == EscalationStatus.ACKNOWLEDGED:
        assert row.acknowledged_at is not None and row.acknowledged_via
        assert row.resolved_at is None and row.resolution_note is None
        assert row.active_step_id is None and waiting == []
    else:
        assert row.resolved_at is None and row.resolved_by_id is None and row.resolution_note is None
        assert row.acknowledged_at is None and row.acknowledged_by_id is None
        # The active step is the one step still waiting (none when nobody is left to page).
        assert waiting == ([row.active_step_id] if row.active_step_id is not None else [])
    return row


# ---- raise vs resolve: the defect of issue 13 --------------------------------------------------------------


@pytest.mark.parametrize("state", ["open", "acknowledged"])
def test_a_worse_report_racing_a_resolve_opens_a_new_escalation_and_never_reopens_the_resolved_one(
    state, api, booked, clinic_with_staff, session, clock, channels, providers
):
    """The report read the escalation as unresolved and urgent; staff resolve it before the report writes.
    Before the row had one owner, the report then wrote ``status=open`` over the resolution (when it had
    been acknowledged), or left a resolved row with a new active step and the emergency on nobody's pager
    (when it was open)."""
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    first = report(clinic, clock, URGENT)
    tick(session, clock, channels)
    if state == "acknowledged":
        assert acknowledge_in_dashboard(first.escalation_id, clinic, clock)
        tick(session, clock, channels)
    assert len(pages_to(twilio, NURSE)) == 1
    clock.advance(seconds=60)

    worse = Side(lambda: report(clinic, clock, EMERGENCY))
    resolved = held_before(
        "UPDATE escalation SET", worse, lambda: resolve_in_dashboard(first.escalation_id, clinic, clock)
    )
    assert resolved is True
    message = worse.result()
    tick(session, clock, channels)

    old = assert_consistent(session, first.escalation_id)
    assert old.status == EscalationStatus.RESOLVED and old.severity == "urgent"
    assert pages_of(session, old.id) == 2  # the one SMS and email of its first round, no more  # type: ignore[arg-type]
    assert message.escalation_id != old.id
    new = assert_consistent(session, message.escalation_id)
    assert new.status == EscalationStatus.OPEN and new.severity == "emergency"
    assert new.ack_code != old.ack_code and new.active_step_id is not None
    nurse = pages_to(twilio, NURSE)
    assert len(nurse) == 2 and f"ACK {new.ack_code}" in nurse[-1]["body"]  # the new report pages
