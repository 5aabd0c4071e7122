"""The life of an outbox row: the transition table, and one guarded UPDATE per event.

No other module writes ``scheduled_message.status`` (tests/test_architecture.py checks it). Each operation
is a single UPDATE whose WHERE clause names the states the event may start from, so two processes can
never both take a row: whoever changes the row owns the next step; whoever changes nothing must not act
(every operation returns whether it changed the row, and every caller looks).

``TRANSITIONS`` is the one source of those states: every operation takes its start states (WHERE) and its
end state (SET) from its event's entry, and tests/test_outbox_transitions.py tries every event from every
state against it. The table below is rendered from it (the same test fails when they differ):

| event | from | to |
| --- | --- | --- |
| claim | scheduled (due) | queued (``claimed_at``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) |
| start_sending | queued (while its purpose lets it go: ``Purpose.may_go``) | sending |
| mark_sent | sending | sent (with the provider id) |
| defer | queued | scheduled (later ``send_at``: quiet hours) |
| retry_later | sending | scheduled (``send_at`` = backoff) |
| mark_unknown | sending | unknown (``settle_after``: when an empty look-up starts to mean "not sent") |
| settle_sent | unknown | sent |
| settle_not_sent | unknown | scheduled (the provider has no such message, and can no longer act on one) |
| reschedule | scheduled, queued, skipped | scheduled or skipped (``send_at`` moved) |
| cancel | scheduled, queued | cancelled (one row, or every row of a cancelled booking) |
| suppress | queued | suppressed (cancelled booking, opt-out, no address) |
| fail | sending | failed |
| fail_unsendable | queued | failed (our side cannot send it: a template that will not render, crashes) |
| crash_before_sending | queued | scheduled (our code raised before the request; ``crashes`` + 1) |
| crash_while_sending | sending | unknown (our code raised once the request may have left; ``crashes`` + 1) |
| requeue_lost | queued (claimed long ago) | scheduled |
| mark_stuck | sending (long ago) | unknown (with ``settle_after``) |
| claim_for_reconcile | unknown (no callback, no look-up for a grace period) | unknown (``claimed_at``) |
| record_sent | sending, unknown | sent |
| record_delivered | sending, unknown, sent | delivered (``delivered_at``) |
| record_undelivered | sending, unknown, sent | undelivered (the provider's error) |
| record_failed | sending, unknown, sent | failed (the provider's error) |

The record_* events are the provider's delivery callbacks (``record_delivery``): they start from every
state ranked below the report (``DELIVERY_RANK``: never backwards) that was handed to the provider
(never *scheduled* or *queued*: a callback naming such a row changes nothing), and only on a row that
carries the callback's provider id or none yet.

A new row starts as *scheduled*, *skipped* (its time had passed when the booking arrived) or *queued*
(an answer to a patient, enqueued at once). docs/architecture.md draws the same table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Update, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col

from service.core.enums import Channel, MessageKind, MessageStatus, SendFailure
from service.db import is_postgres
from service.models import ScheduledMessage
from service.outbox.purpose import Purpose

SM = ScheduledMessage
S = MessageStatus


class Event(StrEnum):
    CLAIM = "claim"
    START_SENDING = "start_sending"
    MARK_SENT = "mark_sent"
    DEFER = "defer"
    RETRY_LATER = "retry_later"
    MARK_UNKNOWN = "mark_unknown"
    SETTLE_SENT = "settle_sent"
    SETTLE_NOT_SENT = "settle_not_sent"
    RESCHEDULE = "reschedule"
    CANCEL = "cancel"
    SUPPRESS = "suppress"
    FAIL = "fail"
    FAIL_UNSENDABLE = "fail_unsendable"
    CRASH_BEFORE_SENDING = "crash_before_sending"
    CRASH_WHILE_SENDING = "crash_while_sending"
    REQUEUE_LOST = "requeue_lost"
    MARK_STUCK = "mark_stuck"
    CLAIM_FOR_RECONCILE = "claim_for_reconcile"
    RECORD_SENT = "record_sent"
    RECORD_DELIVERED = "record_delivered"
    RECORD_UNDELIVERED = "record_undelivered"
    RECORD_FAILED = "record_failed"


@dataclass(frozen=True)
class Transition:
    from_states: frozenset[MessageStatus]
    to_states: frozenset[MessageStatus]
    # In words, for the tables in this docstring and docs/architecture.md: what else the start must meet,
    # and what else the move writes.
    when: str = ""
    then: str = ""

    def end(self, chosen: MessageStatus | None = None) -> MessageStatus:
        """The state the event leads to: ``chosen`` among its end states, or its only one."""
        if chosen is None:
            assert len(self.to_states) == 1, f"choose one of {sorted(self.to_states)}"
            [chosen] = self.to_states
        assert chosen in self.to_states, f"cannot lead to {chosen}, only to {sorted(self.to_states)}"
        return chosen


def _t(
    from_states: Iterable[MessageStatus], *to_states: MessageStatus, when: str = "", then: str = ""
) -> Transition:
    return Transition(frozenset(from_states), frozenset(to_states), when, then)


# Delivery callbacks only move a row forward (the provider does not promise their order): a callback may
# lift a row to a state of higher rank, never lower. Cancelled, suppressed and skipped rows never left and
# are never moved by a callback.
DELIVERY_RANK: dict[MessageStatus, int] = {
    S.SCHEDULED: 0,
    S.QUEUED: 0,
    S.SENDING: 1,
    S.UNKNOWN: 1,
    S.SENT: 2,
    S.DELIVERED: 3,
    S.UNDELIVERED: 3,
    S.FAILED: 3,
}

# The provider's report, as the event that records it.
DELIVERY_EVENTS: dict[MessageStatus, Event] = {
    S.SENT: Event.RECORD_SENT,
    S.DELIVERED: Event.RECORD_DELIVERED,
    S.UNDELIVERED: Event.RECORD_UNDELIVERED,
    S.FAILED: Event.RECORD_FAILED,
}


# Rows never handed to the provider: a status callback about one (a signed post naming its id) is not
# about anything the provider holds, and changes nothing.
NEVER_HANDED = (S.SCHEDULED, S.QUEUED)


def _recorded(report: MessageStatus, then: str = "") -> Transition:
    """A delivery callback's move: from every state ranked below the report that the provider may have
    (sending and after), to the report."""
    below = [
        state
        for state, rank in DELIVERY_RANK.items()
        if rank < DELIVERY_RANK[report] and state not in NEVER_HANDED
    ]
    return _t(below, report, then=then)


TRANSITIONS: dict[Event, Transition] = {
    Event.CLAIM: _t(
        [S.SCHEDULED], S.QUEUED, when="due", then="``claimed_at``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL"
    ),
    Event.START_SENDING: _t(
        [S.QUEUED],
        S.SENDING,
        when="while its purpose lets it go: ``Purpose.may_go``",
    ),
    Event.MARK_SENT: _t([S.SENDING], S.SENT, then="with the provider id"),
    Event.DEFER: _t([S.QUEUED], S.SCHEDULED, then="later ``send_at``: quiet hours"),
    Event.RETRY_LATER: _t([S.SENDING], S.SCHEDULED, then="``send_at`` = backoff"),
    Event.MARK_UNKNOWN: _t(
        [S.SENDING], S.UNKNOWN, then='``settle_after``: when an empty look-up starts to mean "not sent"'
    ),
    Event.SETTLE_SENT: _t([S.UNKNOWN], S.SENT),
    Event.SETTLE_NOT_SENT: _t(
        [S.UNKNOWN], S.SCHEDULED, then="the provider has no such message, and can no longer act on one"
    ),
    # Skipped rows never reached a worker, so a booking moved into the future may bring them back.
    Event.RESCHEDULE: _t(
        [S.SCHEDULED, S.QUEUED, S.SKIPPED], S.SCHEDULED, S.SKIPPED, then="``send_at`` moved"
    ),
    Event.CANCEL: _t(
        [S.SCHEDULED, S.QUEUED], S.CANCELLED, then="one row, or every row of a cancelled booking"
    ),
    Event.SUPPRESS: _t([S.QUEUED], S.SUPPRESSED, then="cancelled booking, opt-out, no address"),
    Event.FAIL: _t([S.SENDING], S.FAILED),
    Event.FAIL_UNSENDABLE: _t(
        [S.QUEUED],
        S.FAILED,
        then="our side cannot send it: a template that will not render, crashes",
    ),
    Event.CRASH_BEFORE_SENDING: _t(
        [S.QUEUED], S.SCHEDULED, then="our code raised before the request; ``crashes`` + 1"
    ),
    Event.CRASH_WHILE_SENDING: _t(
        [S.SENDING], S.UNKNOWN, then="our code raised once the request may have left; ``crashes`` + 1"
    ),
    Event.REQUEUE_LOST: _t([S.QUEUED], S.SCHEDULED, when="claimed long ago"),
    Event.MARK_STUCK: _t([S.SENDING], S.UNKNOWN, when="long ago", then="with ``settle_after``"),
    # Only the time of the look-up changes: the row stays unknown until the look-up settles it.
    Event.CLAIM_FOR_RECONCILE: _t(
        [S.UNKNOWN],
        S.UNKNOWN,
        when="no callback, no look-up for a grace period",
        then="``claimed_at``",
    ),
    Event.RECORD_SENT: _recorded(S.SENT),
    Event.RECORD_DELIVERED: _recorded(S.DELIVERED, then="``delivered_at``"),
    Event.RECORD_UNDELIVERED: _recorded(S.UNDELIVERED, then="the provider's error"),
    Event.RECORD_FAILED: _recorded(S.FAILED, then="the provider's error"),
}

# Rows that have not left and may still be moved or cancelled.
UNSENT = TRANSITIONS[Event.CANCEL].from_states
# Rows that count as "an SMS reached, or may have reached, this patient".
GONE = frozenset({S.SENDING, S.UNKNOWN, S.SENT, S.DELIVERED, S.UNDELIVERED})


def _in_start_states(event: Event) -> ColumnElement[bool]:
    """The WHERE test for the states ``event`` may start from; an equality for a single state, so the
    planners see the statement they always saw (docs/benchmarks.md#scale)."""
    states = TRANSITIONS[event].from_states
    if len(states) == 1:
        [state] = states
        return col(SM.status) == state
    return col(SM.status).in_(sorted(states))


def _move(
    session: Session,
    message_id: int,
    event: Event,
    to_state: MessageStatus | None = None,
    *,
    now: datetime,
    guard: Purpose | None = None,
    **values: Any,
) -> bool:
    """One row from the event's start states to ``to_state`` (and ``values``), in one UPDATE; with a
    ``guard``, only while the row's purpose still lets it go (``Purpose.may_go``)."""
    statement = _statement(event, to_state, tuple(sorted(values)), guard)
    params = {"_id": message_id, "_now": now, **{f"_v_{name}": value for name, value in values.items()}}
    result = session.exec(statement, params=params)
    return result.rowcount == 1


@cache
def _statement(
    event: Event, to_state: MessageStatus | None, columns: tuple[str, ...], guard: Purpose | None
) -> Update:
    """The UPDATE for one kind of move, built once per process (a purpose is one object per process, so
    it keys the cache): at a burst every send makes two of them, and building and hashing a statement each
    time cost more than running it."""
    transition = TRANSITIONS[event]
    to_state = transition.end(to_state)  # the event's one end state, unless the caller chose among them
    table = SM.__table__  # type: ignore[attr-defined]  # set on every table model; SQLModel does not declare it
    where = [table.c.id == bindparam("_id"), table.c.status.in_(sorted(transition.from_states))]
    if guard is not None:
        where.extend(guard.may_go())
    return (
        update(table)
        .where(*where)
        .values(
            status=to_state,
            updated_at=bindparam("_now"),
            **{name: bindparam(f"_v_{name}") for name in columns},
        )
    )


# ---- new rows ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRow:
    """A row to add, built by the package that owns its reason (its ``kind``); the outbox adds it without
    asking what it is for."""

    kind: MessageKind
    clinic_id: int
    step: str
    channel: Channel
    template: str
    send_at: datetime
    booking_id: int | None = None
    patient_id: int | None = None
    # The staff member paged, or who wrote an answer.
    staff_member_id: int | None = None
    escalation_id: int | None = None
    escalation_step_id: int | None = None
    # An address that is no patient's (an answer to a stranger who wrote to us).
    to_address: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    # Its time had passed when it was planned: recorded, never sent.
    skipped: bool = False


def _row(new: NewRow, status: MessageStatus, *, now: datetime) -> ScheduledMessage:
    return ScheduledMessage(
        kind=new.kind,
        clinic_id=new.clinic_id,
        booking_id=new.booking_id,
        patient_id=new.patient_id,
        staff_member_id=new.staff_member_id,
        escalation_id=new.escalation_id,
        escalation_step_id=new.escalation_step_id,
        to_address=new.to_address,
        step=new.step,
        channel=new.channel,
        template=new.template,
        context=dict(new.context),
        send_at=new.send_at,
        status=status,
        claimed_at=now if status == S.QUEUED else None,
        created_at=now,
        updated_at=now,
    )


def schedule(session: Session, rows: Iterable[NewRow], *, now: datetime) -> list[ScheduledMessage]:
    """Rows to send at their ``send_at``: *scheduled*, or *skipped* when their time had passed."""
    added = [_row(new, S.SKIPPED if new.skipped else S.SCHEDULED, now=now) for new in rows]
    session.add_all(added)
    return added


def queue_now(session: Session, new: NewRow, *, now: datetime, once: bool = False) -> ScheduledMessage | None:
    """A row to send at once, *queued*: the caller enqueues it after commit, and the sweep hands it back to
    the dispatcher if that enqueue is lost. With ``once``, None when the row already exists (the outbox's
    unique key on booking or escalation step, step, staff member and channel) instead of an error."""
    row = _row(new, S.QUEUED, now=now)
    if not once:
        session.add(row)
        session.flush()
        return row
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None
    return row


def add_fallback(session: Session, row: ScheduledMessage, *, now: datetime) -> ScheduledMessage | None:
    """The same step on the other channel, *scheduled* now; None when the step already has that row."""
    other = Channel(row.channel).other
    existing = session.scalar(
        select(col(SM.id)).where(
            col(SM.booking_id) == row.booking_id, col(SM.step) == row.step, col(SM.channel) == other
        )
    )
    if existing is not None:
        return None  # the step already goes (or went) on that channel
    fallback = ScheduledMessage(
        clinic_id=row.clinic_id,
        booking_id=row.booking_id,
        patient_id=row.patient_id,
        staff_member_id=row.staff_member_id,
        step=row.step,
        channel=other,
        template=row.template,
        kind=row.kind,
        context=dict(row.context),
        send_at=now,
        status=S.SCHEDULED,
        fallback_for_id=row.id,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(fallback)
    except IntegrityError:
        return None  # another process added it first
    return fallback


# ---- the send path ----------------------------------------------------------------------------------------


def claim_due(session: Session, *, now: datetime, limit: int) -> list[int]:
    """Claim up to ``limit`` due rows (scheduled → queued) and return their ids.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets several dispatchers claim disjoint batches without waiting
    on each other. SQLite serialises writers, so the status guard in the same UPDATE is enough.
    """
    if limit <= 0:
        return []
    return _claim(
        session,
        Event.CLAIM,
        col(SM.send_at) <= now,
        order_by=col(SM.send_at),
        limit=limit,
        claimed_at=now,
        updated_at=now,
    )


def _claim(
    session: Session,
    event: Event,
    *conditions: ColumnElement[bool],
    order_by: Mapped[Any] | None = None,
    limit: int | None = None,
    **values: Any,
) -> list[int]:
    """Take the rows in ``event``'s start states that meet ``conditions`` (the first ``limit`` of them by
    ``order_by``) to its end state, skipping rows another process has locked."""
    candidates = select(col(SM.id)).where(_in_start_states(event), *conditions)
    if order_by is not None:
        candidates = candidates.order_by(order_by)
    if limit is not None:
        candidates = candidates.limit(limit)
    guard: list[ColumnElement[bool]] = [col(SM.id).in_(candidates.scalar_subquery())]
    if is_postgres(session):
        # Another transaction may have moved a candidate between the subquery's snapshot and the lock.
        candidates = candidates.with_for_update(skip_locked=True)
        guard = [col(SM.id).in_(candidates.scalar_subquery()), _in_start_states(event)]
    # SQLite holds the write lock for the whole statement, so the subquery's own status test is the guard;
    # repeating it outside made its planner walk every row in that state (docs/benchmarks.md#scale).
    result = session.execute(
        update(SM)
        .where(*guard)
        .values(status=TRANSITIONS[event].end(), **values)
        .returning(col(SM.id))
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result)


def start_sending(
    session: Session, message_id: int, *, now: datetime, attempts: int, body: str, purpose: Purpose
) -> bool:
    """queued → sending, committed by the caller before the provider call: a process that dies inside the
    call leaves the row in *sending*, to be settled with the provider, never sent again blind. The row's
    purpose adds its conditions to the same UPDATE, so a cancel or a STOP committed a moment earlier wins
    the race."""
    return _move(
        session,
        message_id,
        Event.START_SENDING,
        S.SENDING,
        now=now,
        guard=purpose,
        sending_at=now,
        attempts=attempts,
        body=body,
    )


def mark_sent(session: Session, message_id: int, *, now: datetime, provider_id: str) -> bool:
    return _move(
        session,
        message_id,
        Event.MARK_SENT,
        now=now,
        provider_id=provider_id,
        sent_at=now,
        last_error=None,
        error_code=None,
    )


def defer(session: Session, message_id: int, *, now: datetime, until: datetime) -> bool:
    """Quiet hours: back to *scheduled* at the first allowed time."""
    return _move(session, message_id, Event.DEFER, now=now, send_at=until)


def retry_later(
    session: Session, message_id: int, *, now: datetime, at: datetime, error: str, code: str | None
) -> bool:
    """A transient failure before the request could have taken effect: try again at ``at``."""
    return _move(
        session, message_id, Event.RETRY_LATER, now=now, send_at=at, last_error=error, error_code=code
    )


def mark_unknown(
    session: Session,
    message_id: int,
    *,
    now: datetime,
    error: str,
    code: str | None,
    settle_after: datetime | None,
) -> bool:
    """The request may have reached the provider: settle it with the provider, never by resending. Before
    ``settle_after`` a look-up that finds nothing proves nothing (the provider may still act on it); None
    when the provider answered, so the first look-up is conclusive."""
    return _move(
        session,
        message_id,
        Event.MARK_UNKNOWN,
        now=now,
        last_error=error,
        error_code=code,
        settle_after=settle_after,
    )


def settle_sent(
    session: Session, message_id: int, *, now: datetime, provider_id: str, sent_at: datetime
) -> bool:
    return _move(session, message_id, Event.SETTLE_SENT, now=now, provider_id=provider_id, sent_at=sent_at)


def settle_not_sent(session: Session, message_id: int, *, now: datetime, error: str) -> bool:
    """The provider certainly has no such message: it never left, so sending it now sends it once."""
    return _move(session, message_id, Event.SETTLE_NOT_SENT, now=now, send_at=now, last_error=error)


def suppress(session: Session, message_id: int, *, now: datetime, reason: str) -> bool:
    return _move(session, message_id, Event.SUPPRESS, now=now, last_error=reason)


def fail(session: Session, message_id: int, *, now: datetime, error: str, code: str | None) -> bool:
    return _move(session, message_id, Event.FAIL, now=now, last_error=error, error_code=code)


def fail_unsendable(
    session: Session, message_id: int, *, now: datetime, error: str, why: SendFailure
) -> bool:
    """Our side cannot send it, and would fail the same way every time: failed at once, for staff to see,
    instead of coming back every sweep."""
    return _move(session, message_id, Event.FAIL_UNSENDABLE, now=now, last_error=error, error_code=why.value)


def crash_before_sending(
    session: Session, message_id: int, *, now: datetime, at: datetime, crashes: int, error: str
) -> bool:
    """Our code raised before the request could leave: counted, and tried again at ``at``."""
    return _move(
        session,
        message_id,
        Event.CRASH_BEFORE_SENDING,
        now=now,
        send_at=at,
        crashes=crashes,
        last_error=error,
    )


def crash_while_sending(
    session: Session, message_id: int, *, now: datetime, crashes: int, error: str, settle_after: datetime
) -> bool:
    """Our code raised once the request may have left: counted, and settled with the provider like any
    unsure send, never resent blind."""
    return _move(
        session,
        message_id,
        Event.CRASH_WHILE_SENDING,
        now=now,
        crashes=crashes,
        last_error=error,
        settle_after=settle_after,
    )


# ---- bookings and patients change -------------------------------------------------------------------------


def reschedule(session: Session, message_id: int, *, now: datetime, send_at: datetime, skipped: bool) -> bool:
    """Move a row that has not left. A queued row goes back to scheduled: its pending task finds it no
    longer queued and does nothing, and the dispatcher claims it again at the new time. A row that a worker
    took in the meantime is not touched (False): it is on its way at the old time."""
    # The one event with two end states: the caller's choice, checked against the table.
    to_state = S.SKIPPED if skipped else S.SCHEDULED
    return _move(session, message_id, Event.RESCHEDULE, to_state, now=now, send_at=send_at)


def cancel(session: Session, message_id: int, *, now: datetime, reason: str) -> bool:
    return _move(session, message_id, Event.CANCEL, now=now, last_error=reason)


def cancel_booking_rows(session: Session, booking_id: int, *, now: datetime, reason: str) -> int:
    """The cancel event for every row of a booking that has not left; rows already with a worker are left
    to the send task, which re-checks the booking in the same UPDATE that starts the send."""
    result = session.exec(
        update(SM)
        .where(col(SM.booking_id) == booking_id, _in_start_states(Event.CANCEL))
        .values(status=TRANSITIONS[Event.CANCEL].end(), updated_at=now, last_error=reason)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)


# ---- delivery callbacks -----------------------------------------------------------------------------------


def record_delivery(
    session: Session,
    message_id: int,
    *,
    now: datetime,
    to_state: MessageStatus,
    provider_id: str,
    sent_at: datetime,
    error: str | None = None,
    code: str | None = None,
) -> bool:
    """Move a row forward to what the provider reports (``to_state``: sent, delivered, undelivered or
    failed, one event each); never backwards, never out of a terminal state that did not leave (cancelled,
    suppressed, skipped), never onto a row the provider knows by another id."""
    event = DELIVERY_EVENTS[to_state]
    values: dict[str, Any] = {"provider_id": provider_id, "sent_at": sent_at}
    if event == Event.RECORD_DELIVERED:
        values["delivered_at"] = now
    if event in (Event.RECORD_UNDELIVERED, Event.RECORD_FAILED):
        values.update(last_error=error, error_code=code)
    result = session.exec(
        update(SM)
        .where(
            col(SM.id) == message_id,
            _in_start_states(event),
            or_(col(SM.provider_id).is_(None), col(SM.provider_id) == provider_id),
        )
        .values(status=TRANSITIONS[event].end(), updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


# ---- sweeps -----------------------------------------------------------------------------------------------


def requeue_lost(session: Session, *, now: datetime, older_than: timedelta) -> int:
    """Hand back rows claimed long ago that no worker started: their task was lost (broker restart).

    Like every sweep, it skips rows another transaction holds: a host cut off mid-send may keep its locks
    until PostgreSQL ends its session, and the dispatcher must not wait for that (they are swept later)."""
    lost = _claim(session, Event.REQUEUE_LOST, col(SM.claimed_at) < now - older_than, updated_at=now)
    return len(lost)


def mark_stuck(session: Session, *, now: datetime, older_than: timedelta, settle_window: timedelta) -> int:
    """Rows left in *sending* (a worker died mid-call) become unknown: settled later, never resent blind.

    Each such row's request left before ``now - older_than``, so its settle window is over by
    ``now - older_than + settle_window``: one value for the whole sweep, never earlier than the row's own."""
    stuck = _claim(
        session,
        Event.MARK_STUCK,
        col(SM.sending_at) < now - older_than,
        last_error="the worker stopped during the send",
        settle_after=now - older_than + settle_window,
        updated_at=now,
    )
    return len(stuck)


def claim_unknown_for_reconcile(
    session: Session, *, now: datetime, grace: timedelta, limit: int
) -> list[int]:
    """Unknown rows whose status callback has not come within ``grace``, at most once per grace period.

    Only ``claimed_at`` changes (the time of the last look-up), so a provider that is down is asked again
    later, not every few seconds; the status stays *unknown* until the look-up settles it.
    """
    return _claim(
        session,
        Event.CLAIM_FOR_RECONCILE,
        col(SM.sending_at) < now - grace,
        col(SM.claimed_at).is_(None) | (col(SM.claimed_at) < now - grace),
        limit=limit,
        claimed_at=now,
        updated_at=now,
    )
