"""Races where they happen: on PostgreSQL, with real concurrent sessions, held at the exact point of the
race by a pause on the SQL statement (never by sleeping). SQLite serialises writers and hides every one of
these, so they run in the PostgreSQL pass only.

Each ends with the two halves of the delivery guarantee: at most one provider request per row, and a
database that says what the provider received.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlmodel import Session, col

from service import db
from service.api.schemas import BookingIn
from service.channels import build_channels
from service.channels.base import DeliveryUpdate, InboundMessage
from service.core.enums import Channel, MessageStatus
from service.models import Booking, ScheduledMessage
from service.outbox.dispatch import dispatch
from service.scheduling.bookings import cancel_booking, create_booking, reschedule_booking
from service.sending.delivery import apply_update
from service.sending.reconcile import reconcile
from service.sending.send import send_due_message
from service.settings import get_settings
from service.wiring import purposes
from tests.conftest import TEST_DATABASE_URL, booking_body
from tests.inbound import deliver
from tests.stack import at_the_same_moment

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL,
    reason="races need PostgreSQL (SQLite serialises writers): the PostgreSQL pass runs them",
)
S = MessageStatus
PHONE = "+12125550147"


@contextmanager
def paused_before(
    statement_starts: str, *, in_thread: Callable[[], threading.Thread]
) -> Iterator[threading.Event]:
    """Hold ``in_thread()`` just before it executes its first statement starting with ``statement_starts``
    until the returned event is set; ``reached`` on the event says it got there."""
    engine = db.get_engine()
    resume = threading.Event()
    resume.reached = threading.Event()  # type: ignore[attr-defined]

    def hold(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        mine = threading.current_thread() is in_thread() and statement.startswith(statement_starts)
        if mine and not resume.reached.is_set():  # type: ignore[attr-defined]
            resume.reached.set()  # type: ignore[attr-defined]
            assert resume.wait(30), "the other side of the race never finished"

    event.listen(engine, "before_cursor_execute", hold)
    try:
        yield resume
    finally:
        resume.set()
        event.remove(engine, "before_cursor_execute", hold)


def in_thread(target: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    return thread


def book_due(
    session: Session, clinic: Any, clock: Any, *, phone: str = PHONE, external_id: str = "ext-1"
) -> Booking:
    """A booking whose treatment ended 90 minutes ago: its post-treatment SMS and email are due now."""
    body = booking_body(external_id=external_id, starts_at=(clock.now - timedelta(minutes=150)).isoformat())
    body["patient"]["phone"] = phone
    booking, _ = create_booking(
        session, clinic, BookingIn.model_validate(body).to_command(phone=phone), now=clock.now
    )
    session.commit()
    return booking


def claimed_sms(session: Session, clock: Any, booking: Booking) -> int:
    run = dispatch(session, now=clock.now, settings=get_settings())
    session.commit()
    return session.scalar(
        select(col(ScheduledMessage.id)).where(
            col(ScheduledMessage.booking_id) == booking.id,
            col(ScheduledMessage.channel) == Channel.SMS,
            col(ScheduledMessage.id).in_(run.due),
        )
    )


def send(message_id: int, clock: Any, channels: Any) -> Any:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        return send_due_message(
            session,
            message_id,
            now=clock.now,
            channels=channels,
            purposes=purposes(),
            settings=get_settings(),
        )


def row(message_id: int) -> ScheduledMessage:
    with Session(db.get_engine()) as session:
        found = session.get(ScheduledMessage, message_id)
        assert found is not None
        return found


def sms_to(twilio: Any, phone: str = PHONE) -> int:
    return sum(1 for m in twilio.messages if m["to"] == phone)


def dispatch_and_send_everything(clock: Any, channels: Any, *, at: Any) -> None:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        run = dispatch(session, now=at, settings=get_settings())
        session.commit()
        for message_id in run.due:
            send_due_message(
                session, message_id, now=at, channels=channels, purposes=purposes(), settings=get_settings()
            )


@pytest.fixture
def channels(providers: Any) -> Any:
    return build_channels(get_settings())


def test_a_reschedule_that_read_a_queued_row_never_puts_a_sent_sms_back_in_the_queue(
    session, make_clinic, clock, providers, channels
):
    """The race of the foundation issue: it sent the same SMS twice before the outbox had one owner."""
    twilio, _ = providers
    clinic, _ = make_clinic()
    booking = book_due(session, clinic, clock)
    sms_id = claimed_sms(session, clock, booking)

    def reschedule() -> None:
        with Session(db.get_engine(), expire_on_commit=False) as other:
            moving = other.get(Booking, booking.id)
            assert moving is not None
            reschedule_booking(other, moving, moving.starts_at + timedelta(hours=1), now=clock.now)
            other.commit()

    rescheduler: list[threading.Thread] = []
    with paused_before("UPDATE scheduled_message", in_thread=lambda: rescheduler[0]) as resume:
        rescheduler.append(in_thread(reschedule))
        assert resume.reached.wait(30)  # type: ignore[attr-defined]  # it has read the row as queued
        send(sms_id, clock, channels)  # a worker sends it meanwhile
        resume.set()
        rescheduler[0].join(30)

    dispatch_and_send_everything(clock, channels, at=clock.now + timedelta(hours=3))
    assert sms_to(twilio) == 1
    assert row(sms_id).status == S.SENT and row(sms_id).provider_id == twilio.messages[0]["sid"]


def test_a_cancel_and_a_send_at_the_same_moment_send_at_most_once_and_record_what_happened(
    session, make_clinic, clock, providers, channels
):
    twilio, _ = providers
    clinic, _ = make_clinic()
    for round_number in range(6):
        phone = f"+1212555{1000 + round_number:04d}"
        booking = book_due(session, clinic, clock, phone=phone, external_id=f"cancel-{round_number}")
        sms_id = claimed_sms(session, clock, booking)

        def cancel(booking_id: int = booking.id) -> None:  # type: ignore[assignment]
            with Session(db.get_engine(), expire_on_commit=False) as other:
                found = other.get(Booking, booking_id)
                assert found is not None
                cancel_booking(other, found, now=clock.now)
                other.commit()

        at_the_same_moment_each([lambda sms_id=sms_id: send(sms_id, clock, channels), cancel])
        status = row(sms_id).status
        assert sms_to(twilio, phone) == (1 if status == S.SENT else 0), status
        assert status in (S.SENT, S.CANCELLED, S.SUPPRESSED)
    dispatch_and_send_everything(clock, channels, at=clock.now + timedelta(days=60))
    assert all(n <= 1 for n in _per_number(twilio).values())


def test_a_cancel_committed_just_before_the_send_starts_wins(
    session, make_clinic, clock, providers, channels
):
    """The send task read the booking as active; the cancel commits before its UPDATE: nothing goes."""
    twilio, _ = providers
    clinic, _ = make_clinic()
    booking = book_due(session, clinic, clock)
    sms_id = claimed_sms(session, clock, booking)
    sender: list[threading.Thread] = []
    with paused_before("UPDATE scheduled_message SET status", in_thread=lambda: sender[0]) as resume:
        sender.append(in_thread(lambda: send(sms_id, clock, channels)))
        assert resume.reached.wait(30)  # type: ignore[attr-defined]
        with Session(db.get_engine(), expire_on_commit=False) as other:
            found = other.get(Booking, booking.id)
            assert found is not None
            cancel_booking(other, found, now=clock.now)
            other.commit()
        resume.set()
        sender[0].join(30)
    assert sms_to(twilio) == 0
    assert row(sms_id).status in (S.CANCELLED, S.SUPPRESSED)


def test_a_stop_committed_just_before_the_send_starts_wins(session, make_clinic, clock, providers, channels):
    """The send task read the patient as reachable; STOP arrives and commits before its UPDATE."""
    twilio, _ = providers
    clinic, _ = make_clinic()
    booking = book_due(session, clinic, clock)
    sms_id = claimed_sms(session, clock, booking)
    sender: list[threading.Thread] = []
    with paused_before("UPDATE scheduled_message SET status", in_thread=lambda: sender[0]) as resume:
        sender.append(in_thread(lambda: send(sms_id, clock, channels)))
        assert resume.reached.wait(30)  # type: ignore[attr-defined]
        stop = InboundMessage(
            channel=Channel.SMS, provider_id="SM" + "5" * 32, sender=PHONE, recipient=clinic.sms_from,
            body="STOP", new_text="STOP",
        )  # fmt: skip
        with Session(db.get_engine(), expire_on_commit=False) as other:
            deliver(other, stop, now=clock.now, process=False)
            other.commit()
        resume.set()
        sender[0].join(30)
    assert sms_to(twilio) == 0
    assert row(sms_id).status == S.SUPPRESSED


def test_an_opt_out_and_a_send_at_the_same_moment_send_at_most_once_and_record_what_happened(
    session, make_clinic, clock, providers, channels
):
    twilio, _ = providers
    clinic, _ = make_clinic()
    for round_number in range(6):
        phone = f"+1212555{2000 + round_number:04d}"
        booking = book_due(session, clinic, clock, phone=phone, external_id=f"stop-{round_number}")
        sms_id = claimed_sms(session, clock, booking)
        stop = InboundMessage(
            channel=Channel.SMS, provider_id=f"SM{round_number:032d}", sender=phone,
            recipient=clinic.sms_from, body="STOP", new_text="STOP",
        )  # fmt: skip

        def opt_out(inbound: InboundMessage = stop) -> None:
            with Session(db.get_engine(), expire_on_commit=False) as other:
                deliver(other, inbound, now=clock.now, process=False)
                other.commit()

        at_the_same_moment_each([lambda sms_id=sms_id: send(sms_id, clock, channels), opt_out])
        status = row(sms_id).status
        assert sms_to(twilio, phone) == (1 if status == S.SENT else 0), status
        assert status in (S.SENT, S.SUPPRESSED)


def test_two_dispatchers_at_the_same_moment_claim_each_row_once(
    session, make_clinic, clock, providers, channels
):
    twilio, smtp = providers
    clinic, _ = make_clinic()
    count = 30
    for number in range(count):
        book_due(session, clinic, clock, phone=f"+1212555{3000 + number:04d}", external_id=f"many-{number}")

    def one_dispatcher() -> list[int]:
        with Session(db.get_engine(), expire_on_commit=False) as other:
            run = dispatch(other, now=clock.now, settings=get_settings())
            other.commit()
            return run.due

    claimed = at_the_same_moment(2, one_dispatcher)
    first, second = (set(c) for c in claimed)
    assert not first & second
    assert len(first | second) == 2 * count  # an SMS and an email per booking
    sent = at_the_same_moment_each(
        [lambda ids=ids: [send(i, clock, channels) for i in ids] for ids in (first, second)]
    )
    assert sent is not None
    assert len(twilio.messages) == count and len(smtp.messages) == count
    assert set(_per_number(twilio).values()) == {1}


def test_a_status_callback_and_a_reconcile_at_the_same_moment_settle_the_row_once(
    session, make_clinic, clock, providers, channels
):
    twilio, _ = providers
    clinic, _ = make_clinic()
    booking = book_due(session, clinic, clock)
    sms_id = claimed_sms(session, clock, booking)
    twilio.fail_next(1, status=500, create=True)  # Twilio created it, then failed to answer: unknown
    send(sms_id, clock, channels)
    assert row(sms_id).status == S.UNKNOWN
    [created] = twilio.messages
    later = clock.now + timedelta(seconds=get_settings().UNKNOWN_GRACE_SECONDS + 1)

    def callback() -> str:
        with Session(db.get_engine(), expire_on_commit=False) as other:
            update = DeliveryUpdate(message_id=sms_id, provider_id=created["sid"], status=S.DELIVERED)
            outcome = apply_update(other, update, now=later, purposes=purposes())
            other.commit()
            return outcome

    def look_up() -> str:
        with Session(db.get_engine(), expire_on_commit=False) as other:
            return reconcile(other, sms_id, now=later, channels=channels, purposes=purposes())

    at_the_same_moment_each([callback, look_up])
    dispatch_and_send_everything(clock, channels, at=later + timedelta(minutes=1))
    assert sms_to(twilio) == 1
    settled = row(sms_id)
    assert settled.status in (S.SENT, S.DELIVERED) and settled.provider_id == created["sid"]


def test_the_same_inbound_sms_delivered_four_times_at_once_is_stored_once(session, make_clinic, clock):
    clinic, _ = make_clinic()
    report = InboundMessage(
        channel=Channel.SMS, provider_id="SM" + "7" * 32, sender=PHONE, recipient=clinic.sms_from,
        body="pus and fever", new_text="pus and fever",
    )  # fmt: skip

    def post() -> tuple[int, bool]:
        with Session(db.get_engine(), expire_on_commit=False) as other:
            received = deliver(other, report, now=clock.now, process=False)
            other.commit()
            return received.message.id, received.duplicate  # type: ignore[return-value]

    results = at_the_same_moment(4, post)
    assert len({message_id for message_id, _ in results}) == 1
    assert sorted(duplicate for _, duplicate in results) == [False, True, True, True]


def at_the_same_moment_each(actions: list[Callable[[], Any]]) -> list[Any]:
    """Run each action in its own thread, released together by one barrier; their results in order."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)
    errors: list[BaseException] = []

    def run(index: int, action: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = action()
        except BaseException as exc:  # surfaced below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


def _per_number(twilio: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in twilio.messages:
        counts[message["to"]] = counts.get(message["to"], 0) + 1
    return counts
