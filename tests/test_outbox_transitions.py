"""The outbox's transition table is the contract: every event, tried from every status, changes the row
exactly when the table says it may start there, and leaves it in a state the table names (on SQLite and
PostgreSQL alike; the races on PostgreSQL are in test_races.py). The tables in lifecycle.py's docstring
and in docs/architecture.md are the same table, rendered."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete
from sqlmodel import Session

from service.api.schemas import BookingIn
from service.core.enums import Channel, MessageKind, MessageStatus, SendFailure
from service.models import Booking, ScheduledMessage
from service.outbox import lifecycle
from service.outbox.lifecycle import TRANSITIONS, Event
from service.scheduling.bookings import create_booking
from service.wiring import purposes
from tests.conftest import booking_body

S = MessageStatus
PROVIDER_ID = "SM" + "4" * 32
ARCHITECTURE = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"

# What an operation says it did: a bool (one row), a count (a sweep) or the ids it took (a claim).
Operation = Callable[[Session, ScheduledMessage, datetime], bool | int | list[int]]
LATER = timedelta(hours=2)
STALE = timedelta(minutes=10)  # every row below was claimed and started an hour ago: older than this

def _report(session: Any, row: Any, now: datetime, status: MessageStatus, code: str | None = None) -> bool:
    """A delivery report for the row, as the status callback records it (failures carry a code)."""
    return lifecycle.record_delivery(
        session, row.id, now=now, to_state=status, provider_id=PROVIDER_ID, sent_at=now,
        error="the carrier refused it" if code else None, code=code,
    )  # fmt: skip


# Each event as its callers perform it, on one row that is the only one in the database (so a sweep or a
# claim can only take that row), with whatever else it needs to go: due, claimed or started long enough
# ago, and the provider id a delivery callback names.
OPERATIONS: dict[Event, Operation] = {
    Event.CLAIM: lambda s, row, now: lifecycle.claim_due(s, now=now, limit=10),
    Event.START_SENDING: lambda s, row, now: lifecycle.start_sending(
        s,
        row.id,
        now=now,
        attempts=row.attempts + 1,
        body="How is your skin today?",
        purpose=purposes()[row.kind],
    ),  # fmt: skip
    Event.MARK_SENT: lambda s, row, now: lifecycle.mark_sent(s, row.id, now=now, provider_id=PROVIDER_ID),
    Event.DEFER: lambda s, row, now: lifecycle.defer(s, row.id, now=now, until=now + LATER),
    Event.RETRY_LATER: lambda s, row, now: lifecycle.retry_later(
        s, row.id, now=now, at=now + LATER, error="503 from the provider", code="503"
    ),
    Event.MARK_UNKNOWN: lambda s, row, now: lifecycle.mark_unknown(
        s, row.id, now=now, error="read timeout", code=None, settle_after=now + STALE
    ),
    Event.SETTLE_SENT: lambda s, row, now: lifecycle.settle_sent(
        s, row.id, now=now, provider_id=PROVIDER_ID, sent_at=now
    ),
    Event.SETTLE_NOT_SENT: lambda s, row, now: lifecycle.settle_not_sent(
        s, row.id, now=now, error="the provider has no such message"
    ),
    Event.RESCHEDULE: lambda s, row, now: lifecycle.reschedule(
        s, row.id, now=now, send_at=now + LATER, skipped=False
    ),
    Event.CANCEL: lambda s, row, now: lifecycle.cancel(
        s, row.id, now=now, reason="the booking was cancelled"
    ),
    Event.SUPPRESS: lambda s, row, now: lifecycle.suppress(
        s, row.id, now=now, reason="the patient opted out"
    ),
    Event.FAIL: lambda s, row, now: lifecycle.fail(s, row.id, now=now, error="unreachable", code="21211"),
    Event.FAIL_UNSENDABLE: lambda s, row, now: lifecycle.fail_unsendable(
        s, row.id, now=now, error="no template day_1 in fr", why=SendFailure.TEMPLATE
    ),
    Event.CRASH_BEFORE_SENDING: lambda s, row, now: lifecycle.crash_before_sending(
        s, row.id, now=now, at=now + LATER, crashes=row.crashes + 1, error="KeyError in our send code"
    ),
    Event.CRASH_WHILE_SENDING: lambda s, row, now: lifecycle.crash_while_sending(
        s, row.id, now=now, crashes=row.crashes + 1, error="KeyError in our send code", settle_after=now
    ),
    Event.REQUEUE_LOST: lambda s, row, now: lifecycle.requeue_lost(s, now=now, older_than=STALE),
    Event.MARK_STUCK: lambda s, row, now: lifecycle.mark_stuck(
        s, now=now, older_than=STALE, settle_window=STALE
    ),
    Event.CLAIM_FOR_RECONCILE: lambda s, row, now: lifecycle.claim_unknown_for_reconcile(
        s, now=now, grace=STALE, limit=10
    ),
    Event.RECORD_SENT: lambda s, row, now: _report(s, row, now, S.SENT),
    Event.RECORD_DELIVERED: lambda s, row, now: _report(s, row, now, S.DELIVERED),
    Event.RECORD_UNDELIVERED: lambda s, row, now: _report(s, row, now, S.UNDELIVERED, "30005"),
    Event.RECORD_FAILED: lambda s, row, now: _report(s, row, now, S.FAILED, "30006"),
}

# Operations that perform an event on many rows at once, tried the same way.
MANY_ROWS: dict[str, tuple[Event, Operation]] = {
    "cancel_booking_rows": (
        Event.CANCEL,
        lambda s, row, now: lifecycle.cancel_booking_rows(s, row.booking_id, now=now, reason="cancelled"),
    ),
}

TRIED = [pytest.param(event, operation, id=event.value) for event, operation in OPERATIONS.items()] + [
    pytest.param(event, operation, id=name) for name, (event, operation) in MANY_ROWS.items()
]


@pytest.fixture
def booking(session: Session, make_clinic: Any, clock: Any) -> Booking:
    """A booking whose own planned rows are removed: each row below is then alone in the outbox."""
    clinic, _ = make_clinic()
    body = booking_body(starts_at=(clock.now + timedelta(days=10)).isoformat())
    command = BookingIn.model_validate(body).to_command(phone="+12125550147")
    booking, _ = create_booking(session, clinic, command, now=clock.now)
    session.execute(delete(ScheduledMessage))
    session.commit()
    return booking


def row_in(session: Session, booking: Booking, status: MessageStatus, now: datetime) -> ScheduledMessage:
    """A row in ``status`` that every event could take by time: due, claimed and started an hour ago."""
    long_ago = now - timedelta(hours=1)
    row = ScheduledMessage(
        clinic_id=booking.clinic_id, booking_id=booking.id, patient_id=booking.patient_id, step="day-1",
        channel=Channel.SMS, template="day_1", kind=MessageKind.CARE, status=status, send_at=long_ago,
        claimed_at=long_ago, sending_at=long_ago, provider_id=PROVIDER_ID, created_at=long_ago,
        updated_at=long_ago,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def reread(session: Session, row: ScheduledMessage) -> ScheduledMessage:
    fresh = session.get(ScheduledMessage, row.id, populate_existing=True)
    assert fresh is not None
    return fresh


def reported_change(result: bool | int | list[int], row: ScheduledMessage) -> bool:
    """Whether the operation said it changed the row: True, a count of 1, or the row among those taken."""
    if isinstance(result, bool):
        return result
    if isinstance(result, int):
        assert result in (0, 1), f"a sweep over one row reported {result} rows"
        return result == 1
    assert set(result) <= {row.id}, f"a claim over one row reported {result}"
    return bool(result)


def test_every_event_is_in_the_table_and_tried_here():
    assert set(TRANSITIONS) == set(Event), f"events without a transition: {set(Event) - set(TRANSITIONS)}"
    assert set(OPERATIONS) == set(Event), f"events never tried below: {set(Event) - set(OPERATIONS)}"
    for event, transition in TRANSITIONS.items():
        assert transition.from_states and transition.to_states, event
        assert transition.from_states <= set(S) and transition.to_states <= set(S), event


@pytest.mark.parametrize(("event", "operation"), TRIED)
def test_an_event_moves_a_row_exactly_from_the_states_the_table_names(
    event: Event, operation: Operation, session: Session, booking: Booking, clock: Any
):
    transition = TRANSITIONS[event]
    wrong: list[str] = []
    for status in S:
        row = row_in(session, booking, status, clock.now)
        before = reread(session, row).model_dump()
        changed = reported_change(operation(session, row, clock.now), row)
        after = reread(session, row)
        if status in transition.from_states:
            if not changed:
                wrong.append(f"from {status}: reported no change")
            elif after.status not in transition.to_states or after.updated_at != clock.now:
                wrong.append(f"from {status}: went to {after.status} at {after.updated_at}")
        elif changed or after.model_dump() != before:
            wrong.append(f"from {status}: moved to {after.status} (reported {changed}), not a start state")
        session.rollback()  # the row goes: the next status has the outbox to itself
    assert not wrong, f"{event} disagrees with TRANSITIONS: " + "; ".join(wrong)


# ---- the tables drawn from TRANSITIONS --------------------------------------------------------------------


def _cell(states: frozenset[MessageStatus], note: str, joiner: str) -> str:
    names = joiner.join(status.value for status in S if status in states)
    return f"{names} ({note})" if note else names


def rendered() -> list[tuple[str, str, str]]:
    """(event, from, to) for each event, as both tables show it."""
    return [
        (event.value, _cell(t.from_states, t.when, ", "), _cell(t.to_states, t.then, " or "))
        for event, t in TRANSITIONS.items()
    ]


def test_the_lifecycle_docstring_shows_the_table():
    table = "\n".join(
        ["| event | from | to |", "| --- | --- | --- |"] + [f"| {e} | {f} | {t} |" for e, f, t in rendered()]
    )
    assert table in (lifecycle.__doc__ or ""), f"lifecycle.py's docstring should show:\n{table}"


def test_the_architecture_doc_shows_the_table():
    section = ARCHITECTURE.read_text().split("## Outbox lifecycle", 1)[1].split("\n## ", 1)[0]
    drawn: list[tuple[str, str, str]] = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith(("| event ", "| ---")):
            continue
        event, from_cell, to_cell, _who = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        if not event.startswith("("):  # "(new)": rows that are inserted, not moved
            drawn.append((event, from_cell, to_cell))
    expected = "\n".join(f"| {e} | {f} | {t} | |" for e, f, t in rendered())
    assert drawn == rendered(), f"docs/architecture.md's outbox table should read (who aside):\n{expected}"
