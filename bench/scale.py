"""Does the dispatcher's cost grow with the table? The claim of 100 due rows with 1,000,000 future rows in
the outbox (quick: 100,000) against the same claim with 10,000, on PostgreSQL and SQLite; and a worker's
memory after sending with 100,000 future messages in the table against none.

    .venv/bin/python bench/run.py --only scale [--quick]
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import Session

from bench.harness import database, make_clinic, median, production, record, rss_mib, seed_bookings, utcnow
from service import db
from service.core.enums import Channel, MessageKind, MessageStatus
from service.models import Booking, Clinic, ScheduledMessage
from service.outbox import lifecycle

DUE = 100
PASSES = 15
QUICK_PASSES = 7
CHUNK = 50_000


def _add_rows(session: Session, booking: Booking, count: int, *, first: int, due: bool) -> None:
    """``count`` outbox rows on one booking (steps named apart): future ones spread over two months, or
    due ones a minute ago."""
    now = utcnow()
    table = ScheduledMessage.__table__  # type: ignore[attr-defined]
    for start in range(first, first + count, CHUNK):
        rows = [
            {
                "clinic_id": booking.clinic_id,
                "booking_id": booking.id,
                "patient_id": booking.patient_id,
                "step": f"{'due' if due else 'future'}-{number}",
                "channel": Channel.SMS if number % 2 else Channel.EMAIL,
                "template": "post_immediate",
                "send_at": now - timedelta(minutes=1)
                if due
                else now + timedelta(minutes=10 + number % 86_400),
                "status": MessageStatus.SCHEDULED,
                "kind": MessageKind.CARE,
                "attempts": 0,
                "context": {},
                "created_at": now,
                "updated_at": now,
            }
            for number in range(start, min(start + CHUNK, first + count))
        ]
        session.execute(insert(table), rows)
        session.commit()
    session.execute(text("ANALYZE"))  # the planner sees the table as it is, as autovacuum would make it
    session.commit()


def _claim_ms(session: Session, passes: int) -> float:
    """The median time of claiming the due rows, each pass rolled back so the rows stay due."""
    times = []
    for number in range(passes + 3):  # three passes first, unmeasured: statement caches, plans, pages
        if number == 3:
            times.clear()
        started = time.perf_counter()
        claimed = lifecycle.claim_due(session, now=utcnow(), limit=DUE)
        times.append((time.perf_counter() - started) * 1000)
        assert len(claimed) == DUE, f"claimed {len(claimed)} of {DUE}"
        session.rollback()
    return median(times)


def _claim(kind: str, big: int, passes: int) -> dict[str, Any]:
    small = 10_000
    with database(kind):
        now = utcnow()
        with Session(db.get_engine()) as session:
            clinic, _ = make_clinic(session, now=now)
            seed_bookings(session, clinic, 1, now=now)
            booking = session.query(Booking).one()
            session.query(ScheduledMessage).delete()
            session.commit()
            _add_rows(session, booking, DUE, first=0, due=True)
            _add_rows(session, booking, small, first=0, due=False)
            small_ms = _claim_ms(session, passes)
            _add_rows(session, booking, big - small, first=small, due=False)
            big_ms = _claim_ms(session, passes)
    return {
        "small_rows": small,
        "big_rows": big,
        "small_ms": small_ms,
        "big_ms": big_ms,
        "ratio": big_ms / small_ms,
    }


def _worker_memory() -> tuple[float, float]:
    """The shipped workers' resident memory after sending 100 messages with no future rows in the table,
    then after sending 100 more with 100,000 future rows added: an upper bound on what the rows cost, as
    it also holds whatever the second batch of sends itself left behind."""
    with database("postgresql") as url:
        now = utcnow()
        with Session(db.get_engine()) as session:
            clinic_id = make_clinic(session, now=now)[0].id
        with production(url) as layout:
            layout.start_workers()
            layout.start_beat()
            readings = []
            for round_number, future in enumerate((0, 100_000)):
                with Session(db.get_engine()) as session:
                    if future:
                        booking = session.query(Booking).first()
                        _add_rows(session, booking, future, first=0, due=False)
                    clinic = session.get(Clinic, clinic_id)
                    seed_bookings(session, clinic, DUE // 2, now=utcnow(), first=round_number * DUE)
                wanted = (round_number + 1) * DUE // 2
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and (
                    len(layout.twilio.messages) < wanted or len(layout.smtp.received) < wanted
                ):
                    time.sleep(0.2)
                time.sleep(3)  # several more dispatcher passes over the whole table
                readings.append(
                    max(rss_mib(p.pid) for n, p in layout.processes.items() if n.startswith("worker"))
                )
            return readings[0], readings[1]


def run(*, quick: bool) -> dict[str, Any]:
    big = 100_000 if quick else 1_000_000
    passes = QUICK_PASSES if quick else PASSES
    postgres = _claim("postgresql", big, passes)
    sqlite = _claim("sqlite", big, passes)
    empty_mib, full_mib = _worker_memory()
    return record(
        "scale",
        postgres_claim_ms_10k=postgres["small_ms"],
        postgres_claim_ms_big=postgres["big_ms"],
        postgres_ratio=postgres["ratio"],
        sqlite_claim_ms_10k=sqlite["small_ms"],
        sqlite_claim_ms_big=sqlite["big_ms"],
        sqlite_ratio=sqlite["ratio"],
        big_rows=big,
        worker_rss_mib_none=empty_mib,
        worker_rss_mib_100k=full_mib,
        memory_ratio=full_mib / empty_mib,
        target_ratio=1.5,
        target_memory_ratio=1.1,
    )
