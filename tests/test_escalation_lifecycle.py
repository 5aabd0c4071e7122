"""The escalation's transition table is the contract: every event, tried from every state, changes the row
exactly when the table says it may start there, and leaves it in a state the table names (on SQLite and
PostgreSQL alike; the races on PostgreSQL are in test_escalation_races.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session, col

from service.core.enums import EscalationStatus, EscalationSubject, Severity, StepStatus
from service.core.escalation import Policy, Round
from service.models import Escalation, EscalationStep
from service.paging import lifecycle
from service.paging.lifecycle import STEP_TRANSITIONS, TRANSITIONS, Event, LifecycleError

E = EscalationStatus


def escalation_in(session: Session, clinic: Any, state: EscalationStatus, clock: Any) -> Escalation:
    """An urgent escalation with its first round active, then acknowledged or resolved as asked."""
    escalation = lifecycle.open_escalation(
        session, clinic_id=clinic.id, subject=EscalationSubject.REPLY, patient_id=None, booking_id=None,
        severity=Severity.URGENT, policy=Policy.build([], {}).to_snapshot(),
        now=clock.now,
    )  # fmt: skip
    lifecycle.start_round(session, escalation, Round((1,), clock.now, "it was just reported"), now=clock.now)
    if state in (E.ACKNOWLEDGED, E.RESOLVED):
        assert lifecycle.acknowledge(session, escalation, by_id=None, via="api", now=clock.now)
    if state == E.RESOLVED:
        assert lifecycle.resolve(session, escalation, by_id=None, note="seen", now=clock.now)
    session.commit()
    return escalation


def active_step(session: Session, escalation: Escalation) -> EscalationStep:
    """The active step, or (when there is none) the latest: an event given it must still refuse."""
    steps = session.scalars(
        select(EscalationStep)
        .where(col(EscalationStep.escalation_id) == escalation.id)
        .order_by(col(EscalationStep.number).desc())
    ).all()
    return next((s for s in steps if s.id == escalation.active_step_id), steps[0])


def waiting_steps(session: Session, escalation: Escalation) -> list[int]:
    return list(
        session.scalars(
            select(col(EscalationStep.id)).where(
                col(EscalationStep.escalation_id) == escalation.id,
                col(EscalationStep.status).in_(sorted(lifecycle.WAITING)),
            )
        )
    )


# Each event as its callers use it; start_round is tried on its own below (it is no event a caller may
# attempt and lose: it follows one that holds the row).
EVENTS: dict[Event, Callable[[Session, Escalation, Any], bool]] = {
    Event.JOIN: lambda s, e, now: lifecycle.join(s, e, now=now),
    Event.RAISE_SEVERITY: lambda s, e, now: lifecycle.raise_severity(s, e, Severity.EMERGENCY, now=now),
    Event.RUN_ROUND: lambda s, e, now: lifecycle.run_round(
        s, e, active_step(s, e), pages_anyone=True, now=now
    ),
    Event.REPLACE_ROUND: lambda s, e, now: lifecycle.replace_round(
        s, e, expected_step_id=e.active_step_id, now=now
    ),
    Event.ACKNOWLEDGE: lambda s, e, now: lifecycle.acknowledge(s, e, by_id=None, via="api", now=now),
    Event.RESOLVE: lambda s, e, now: lifecycle.resolve(s, e, by_id=None, note="done", now=now),
}


def test_every_event_of_the_table_is_tried_and_nothing_leaves_resolved():
    assert set(EVENTS) == set(TRANSITIONS) - {Event.OPEN, Event.START_ROUND}
    for event, transition in TRANSITIONS.items():
        assert transition.to_states and transition.to_states <= set(E), event
        assert E.RESOLVED not in transition.from_states, f"{event} would reopen a resolved escalation"
    for transition in STEP_TRANSITIONS.values():
        assert transition.from_states and transition.to_states <= set(StepStatus)


@pytest.mark.parametrize("state", list(E))
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_an_event_changes_the_row_exactly_from_the_states_the_table_names(
    event, state, session, make_clinic, clock
):
    clinic, _ = make_clinic()
    escalation = escalation_in(session, clinic, state, clock)
    before = (escalation.status, escalation.severity, escalation.active_step_id, escalation.updated_at)
    later = clock.advance(minutes=5)

    changed = EVENTS[event](session, escalation, later)
    session.commit()

    assert changed == (state in TRANSITIONS[event].from_states)
    row = session.get(Escalation, escalation.id, populate_existing=True)
    assert row is not None
    if changed:
        assert row.status in TRANSITIONS[event].to_states and row.updated_at == later
        # Every event that clears the active step leaves no step waiting (the caller starts the next).
        assert row.active_step_id is None or event == Event.JOIN
    else:
        assert (row.status, row.severity, row.active_step_id, row.updated_at) == before
    assert waiting_steps(session, row) == ([row.active_step_id] if row.active_step_id else [])


def test_a_round_starts_only_where_an_event_left_no_active_step(session, make_clinic, clock):
    clinic, _ = make_clinic()
    escalation = escalation_in(session, clinic, E.OPEN, clock)
    planned = Round((1,), clock.now + timedelta(minutes=10), "nobody acknowledged it in time")
    with pytest.raises(LifecycleError):
        lifecycle.start_round(session, escalation, planned, now=clock.now)  # its first round is active
    session.rollback()
    assert lifecycle.replace_round(
        session, escalation, expected_step_id=escalation.active_step_id, now=clock.now
    )
    step = lifecycle.start_round(session, escalation, planned, now=clock.now)
    session.commit()
    assert escalation.active_step_id == step.id and step.number == 2
    assert waiting_steps(session, escalation) == [step.id]


def test_a_raise_from_a_stale_read_changes_nothing_once_the_severity_is_already_as_high(
    session, make_clinic, clock
):
    """What a second report that read the escalation as urgent meets when the first raised it already."""
    clinic, _ = make_clinic()
    escalation = escalation_in(session, clinic, E.OPEN, clock)
    assert lifecycle.raise_severity(session, escalation, Severity.EMERGENCY, now=clock.now)
    assert not lifecycle.raise_severity(session, escalation, Severity.EMERGENCY, now=clock.now)
    assert lifecycle.join(session, escalation, now=clock.now)
    assert escalation.severity == Severity.EMERGENCY and escalation.status == E.OPEN


def test_a_raise_of_an_acknowledged_escalation_clears_the_acknowledgement(session, make_clinic, clock):
    clinic, _ = make_clinic()
    escalation = escalation_in(session, clinic, E.ACKNOWLEDGED, clock)
    assert escalation.acknowledged_at is not None
    assert lifecycle.raise_severity(session, escalation, Severity.EMERGENCY, now=clock.now)
    assert escalation.status == E.OPEN and escalation.acknowledged_at is None
    assert escalation.acknowledged_via is None and escalation.active_step_id is None
