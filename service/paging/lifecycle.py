"""The life of an escalation and of its steps: the transition tables, and one guarded UPDATE per event.

No other module creates or writes an escalation row — its status, severity, active step, first page,
acknowledgement and resolution — or an escalation step's status (tests/test_architecture.py checks the
source, tests/conftest.py every statement at run time). The two tables share this one owner because every
event changes both at once: acknowledging, resolving, raising the severity or ending a round supersedes
the step that was waiting, and a round starts by inserting its step and pointing the escalation at it. The
invariant that ties them — an escalation's active step is its one step still waiting — can only be held
where both are written.

Each event is one UPDATE of the escalation whose WHERE clause names the states the event may start from
(and, where it matters, the severity it must be below or the step it expects to be active). It returns
whether it changed the row, and every caller looks: whoever changes nothing must not act. Whoever changed
the row holds it locked until commit, so what the event writes next (the waiting step superseded, a new
round started) cannot interleave with another event: a second writer's UPDATE waits for that commit, then
finds the row no longer in a state it may start from, and changes nothing. The caller's ``Escalation`` is
refreshed either way, so a caller that lost can say who won.

| event | from | to |
| --- | --- | --- |
| open | — | open (its first round starts at once, unless nobody can be paged) |
| join | open, acknowledged | unchanged (a new report of no higher severity; ``updated_at`` only) |
| raise_severity | open, acknowledged, of a lower severity | open, acknowledgement cleared, no active step |
| start_round | open, no active step (new, or just cleared by an event above) | open, the new step active |
| run_round | open, this step active and due | open, no active step; the step paged |
| replace_round | open, the step read as active still active | open, no active step |
| acknowledge | open | acknowledged, no active step |
| resolve | open, acknowledged | resolved, no active step |

Nothing leaves *resolved*: a report from a patient whose escalation was resolved, even one that read it
as open a moment before, opens a new escalation. An acknowledged one is opened again only by a rise in
severity (someone has it, but not this bad).

| step event | from | to |
| --- | --- | --- |
| (new) | — | pending, only through start_round |
| claim | pending, due, the active step of an open escalation | claimed (the dispatcher) |
| requeue_lost | claimed long ago (its task was lost) | pending (the dispatcher) |
| page | pending, claimed | paged, only in run_round, under the escalation's lock |
| supersede | pending, claimed | superseded, whenever an event clears the escalation's active step |

docs/architecture.md draws the same tables.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from service.core.enums import EscalationStatus, EscalationSubject, Severity, StepStatus
from service.core.escalation import Round, new_ack_code
from service.db import is_postgres
from service.models import Escalation, EscalationStep, UTCDateTime, id_of

E = EscalationStatus
SS = StepStatus
# Draws of a random ACK code before giving up (a collision is rare: docs/architecture.md#paging).
ACK_CODE_TRIES = 20
State = TypeVar("State", EscalationStatus, StepStatus)


class Event(StrEnum):
    OPEN = "open"
    JOIN = "join"
    RAISE_SEVERITY = "raise_severity"
    START_ROUND = "start_round"
    RUN_ROUND = "run_round"
    REPLACE_ROUND = "replace_round"
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class StepEvent(StrEnum):
    CLAIM = "claim"
    REQUEUE_LOST = "requeue_lost"
    PAGE = "page"
    SUPERSEDE = "supersede"


@dataclass(frozen=True)
class Transition(Generic[State]):
    from_states: frozenset[State]
    to_states: frozenset[State]


def _t(from_states: Iterable[State], *to_states: State) -> Transition[State]:
    return Transition(frozenset(from_states), frozenset(to_states))


TRANSITIONS: dict[Event, Transition[EscalationStatus]] = {
    Event.OPEN: _t([], E.OPEN),
    Event.JOIN: _t([E.OPEN, E.ACKNOWLEDGED], E.OPEN, E.ACKNOWLEDGED),
    Event.RAISE_SEVERITY: _t([E.OPEN, E.ACKNOWLEDGED], E.OPEN),
    Event.START_ROUND: _t([E.OPEN], E.OPEN),
    Event.RUN_ROUND: _t([E.OPEN], E.OPEN),
    Event.REPLACE_ROUND: _t([E.OPEN], E.OPEN),
    Event.ACKNOWLEDGE: _t([E.OPEN], E.ACKNOWLEDGED),
    Event.RESOLVE: _t([E.OPEN, E.ACKNOWLEDGED], E.RESOLVED),
}

STEP_TRANSITIONS: dict[StepEvent, Transition[StepStatus]] = {
    StepEvent.CLAIM: _t([SS.PENDING], SS.CLAIMED),
    StepEvent.REQUEUE_LOST: _t([SS.CLAIMED], SS.PENDING),
    StepEvent.PAGE: _t([SS.PENDING, SS.CLAIMED], SS.PAGED),
    StepEvent.SUPERSEDE: _t([SS.PENDING, SS.CLAIMED], SS.SUPERSEDED),
}

# Escalations that still need a person: paging, or taken but not yet closed.
UNRESOLVED = TRANSITIONS[Event.RESOLVE].from_states
# Steps that may still page: an escalation's active step is its one step in these states.
WAITING = STEP_TRANSITIONS[StepEvent.SUPERSEDE].from_states


class LifecycleError(RuntimeError):
    """An event used out of order by the code (never by a race): a bug to fix, not a state to handle."""


def _change(
    session: Session,
    escalation: Escalation,
    event: Event,
    *guards: Any,
    supersede_waiting: bool = False,
    **values: Any,
) -> bool:
    """The escalation from the event's start states (and ``guards``) to ``values``, in one UPDATE; True
    when it changed. ``escalation`` is refreshed either way: it says what the row is now. With
    ``supersede_waiting`` (an event that cancels the round in waiting, not one that runs it), the step that
    was waiting is superseded in the same transaction, so it can never page."""
    transition = TRANSITIONS[event]
    if "status" in values:
        assert values["status"] in transition.to_states, f"{event} cannot lead to {values['status']}"
    else:  # the event keeps the row's state: every state it starts from must be one it may end in
        assert transition.from_states <= transition.to_states, f"{event} must say where it leads"
    result = session.exec(
        update(Escalation)
        .where(
            col(Escalation.id) == escalation.id,
            col(Escalation.status).in_(sorted(transition.from_states)),
            *guards,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    changed = result.rowcount == 1
    if changed and supersede_waiting:
        _supersede_waiting(session, id_of(escalation))
    session.refresh(escalation)
    return changed


def _supersede_waiting(session: Session, escalation_id: int) -> None:
    """The escalation's active step was cleared: the step that was waiting must never page."""
    transition = STEP_TRANSITIONS[StepEvent.SUPERSEDE]
    session.execute(
        update(EscalationStep)
        .where(
            col(EscalationStep.escalation_id) == escalation_id,
            col(EscalationStep.status).in_(sorted(transition.from_states)),
        )
        .values(status=SS.SUPERSEDED)
        .execution_options(synchronize_session=False)
    )


# ---- the escalation ---------------------------------------------------------------------------------------


def open_escalation(
    session: Session,
    *,
    clinic_id: int,
    subject: EscalationSubject,
    patient_id: int | None,
    booking_id: int | None,
    severity: Severity,
    policy: dict[str, Any],
    now: datetime,
) -> Escalation:
    """A new escalation, open with no active step, with a random ACK code of its own (unique in the
    clinic; drawn again on the rare collision): the caller starts its first round (``start_round``)."""
    for _ in range(ACK_CODE_TRIES):
        escalation = Escalation(
            clinic_id=clinic_id,
            subject=subject,
            patient_id=patient_id,
            booking_id=booking_id,
            severity=severity,
            status=E.OPEN,
            ack_code=new_ack_code(secrets.choice),
            policy=policy,
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(escalation)
                session.flush()
        except IntegrityError:
            continue
        return escalation
    raise RuntimeError(f"no free ACK code after {ACK_CODE_TRIES} draws")


def join(session: Session, escalation: Escalation, *, now: datetime) -> bool:
    """A new report of no higher severity joins the escalation. False when it was resolved meanwhile: the
    report must then open a new one, or it would sit on a closed escalation that pages nobody."""
    return _change(session, escalation, Event.JOIN, updated_at=now)


def raise_severity(session: Session, escalation: Escalation, severity: Severity, *, now: datetime) -> bool:
    """A worse report: the escalation is open again at ``severity`` with no active step (the caller starts
    the round that pages again). False when it was resolved meanwhile, or is already this severe."""
    lower = sorted(s for s in Severity if s.rank < Severity(severity).rank)
    return _change(
        session,
        escalation,
        Event.RAISE_SEVERITY,
        col(Escalation.severity).in_(lower),
        supersede_waiting=True,
        severity=severity,
        status=E.OPEN,
        # Whoever had it took it at the lower severity: the queue must show it as nobody's again.
        acknowledged_at=None,
        acknowledged_by_id=None,
        acknowledged_via=None,
        active_step_id=None,
        updated_at=now,
    )


def start_round(session: Session, escalation: Escalation, planned: Round, *, now: datetime) -> EscalationStep:
    """Insert ``planned`` as the escalation's next step and make it the active one.

    Only right after ``open_escalation`` or an event that cleared the active step, in the same
    transaction: that event holds the row, so the step's number is the next one and nobody else can point
    the escalation elsewhere in between. Called otherwise, it raises ``LifecycleError``."""
    number = (
        session.scalar(
            select(func.max(EscalationStep.number)).where(col(EscalationStep.escalation_id) == escalation.id)
        )
        or 0
    ) + 1
    step = EscalationStep(
        escalation_id=id_of(escalation),
        number=number,
        levels=list(planned.levels),
        reason=planned.reason,
        due_at=planned.due_at,
        status=SS.PENDING,
        created_at=now,
    )
    session.add(step)
    session.flush()
    if not _change(
        session,
        escalation,
        Event.START_ROUND,
        col(Escalation.active_step_id).is_(None),
        active_step_id=step.id,
        updated_at=now,
    ):
        raise LifecycleError(f"escalation {escalation.id}: a round started without an event that holds it")
    return step


def run_round(
    session: Session, escalation: Escalation, step: EscalationStep, *, pages_anyone: bool, now: datetime
) -> bool:
    """The active step's time has come: its round ends (no active step until the caller starts the next)
    and the step is marked paged, so its pages may be queued. False — queue nothing — when the step is not
    due, or is no longer the open escalation's active step (acknowledged, resolved, raised, or run by
    another worker since it was read). ``pages_anyone``: the first round that does sets first_paged_at."""
    if step.due_at > now:
        return False
    first_page: dict[str, Any] = {}
    if pages_anyone:
        first_page["first_paged_at"] = func.coalesce(Escalation.first_paged_at, literal(now, UTCDateTime()))
    if not _change(
        session,
        escalation,
        Event.RUN_ROUND,
        col(Escalation.active_step_id) == step.id,
        active_step_id=None,
        updated_at=now,
        **first_page,
    ):
        return False
    transition = STEP_TRANSITIONS[StepEvent.PAGE]
    paged = session.exec(
        update(EscalationStep)
        .where(
            col(EscalationStep.id) == step.id,
            col(EscalationStep.status).in_(sorted(transition.from_states)),
        )
        .values(status=SS.PAGED, paged_at=now)
        .execution_options(synchronize_session=False)
    )
    if paged.rowcount != 1:
        raise LifecycleError(f"step {step.id} was active but no longer waiting")
    session.refresh(step)
    return True


def replace_round(
    session: Session, escalation: Escalation, *, expected_step_id: int | None, now: datetime
) -> bool:
    """The waiting round is replaced by a sooner one (a page failed for good): no active step until the
    caller starts it. False when the active step is no longer ``expected_step_id`` or it is not open."""
    active = (
        col(Escalation.active_step_id).is_(None)
        if expected_step_id is None
        else col(Escalation.active_step_id) == expected_step_id
    )
    return _change(
        session,
        escalation,
        Event.REPLACE_ROUND,
        active,
        supersede_waiting=True,
        active_step_id=None,
        updated_at=now,
    )


def acknowledge(
    session: Session, escalation: Escalation, *, by_id: int | None, via: str, now: datetime
) -> bool:
    """Paging stops at once. False when it was not open (acknowledged or resolved already)."""
    return _change(
        session,
        escalation,
        Event.ACKNOWLEDGE,
        supersede_waiting=True,
        status=E.ACKNOWLEDGED,
        acknowledged_at=now,
        acknowledged_by_id=by_id,
        acknowledged_via=via,
        active_step_id=None,
        updated_at=now,
    )


def resolve(session: Session, escalation: Escalation, *, by_id: int | None, note: str, now: datetime) -> bool:
    """Closed for good with a note. False when it was resolved already."""
    return _change(
        session,
        escalation,
        Event.RESOLVE,
        supersede_waiting=True,
        status=E.RESOLVED,
        resolved_at=now,
        resolved_by_id=by_id,
        resolution_note=note,
        active_step_id=None,
        updated_at=now,
    )


# ---- the dispatcher's sweeps of steps ---------------------------------------------------------------------


def claim_due_steps(session: Session, *, now: datetime, limit: int) -> list[int]:
    """Steps whose time has come and that are still their open escalation's active step (pending →
    claimed), for the dispatcher to hand to a task each."""
    transition = STEP_TRANSITIONS[StepEvent.CLAIM]
    due = (
        select(col(EscalationStep.id))
        .join(Escalation, col(Escalation.active_step_id) == EscalationStep.id)
        .where(
            col(EscalationStep.status).in_(sorted(transition.from_states)),
            col(EscalationStep.due_at) <= now,
            col(Escalation.status) == E.OPEN,
        )
        .order_by(col(EscalationStep.due_at))
        .limit(limit)
    )
    if is_postgres(session):
        due = due.with_for_update(of=EscalationStep, skip_locked=True)
    result = session.execute(
        update(EscalationStep)
        .where(
            col(EscalationStep.id).in_(due.scalar_subquery()),
            col(EscalationStep.status).in_(sorted(transition.from_states)),
        )
        .values(status=SS.CLAIMED, claimed_at=now)
        .returning(col(EscalationStep.id))
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result)


def requeue_lost_steps(session: Session, *, now: datetime, older_than: timedelta) -> int:
    """Claimed steps whose task never ran (a broker restart lost it) go back to pending."""
    transition = STEP_TRANSITIONS[StepEvent.REQUEUE_LOST]
    lost = select(col(EscalationStep.id)).where(
        col(EscalationStep.status).in_(sorted(transition.from_states)),
        col(EscalationStep.claimed_at) < now - older_than,
    )
    if is_postgres(session):
        lost = lost.with_for_update(skip_locked=True)  # never wait on a lock a cut-off host still holds
    result = session.exec(
        update(EscalationStep)
        .where(
            col(EscalationStep.id).in_(lost.scalar_subquery()),
            col(EscalationStep.status).in_(sorted(transition.from_states)),
        )
        .values(status=SS.PENDING)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount
