"""Lateness under faults with the shipped recovery settings (the fault tests assert the counts with
shortened intervals; this measures the times with the defaults). Each scenario books patients whose
messages are due at once, breaks something, and reports when the last message arrived, and how many were
lost or sent twice:

- ``twilio_outage``: the fake Twilio answers 500 to everything for 30 s, then recovers;
- ``redis_restart``: Redis killed mid-batch and started again empty (every queued task lost);
- ``worker_kill``: a worker SIGKILLed mid-batch (SMS and email in flight), another started.

    .venv/bin/python bench/run.py --only faults [--quick]
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlmodel import Session

from bench.harness import Layout, database, make_clinic, production, record, seed_bookings, utcnow
from service import db


def _scenario(bookings: int, breaking: Callable[[Layout, float], float | None]) -> dict[str, Any]:
    """Seed, start the layout, let ``breaking`` do its damage (it returns when the fault ended, or None),
    wait for every message, and count."""
    with database("postgresql") as url:
        now = utcnow()
        with Session(db.get_engine()) as session:
            clinic, _ = make_clinic(session, now=now)
            seed_bookings(session, clinic, bookings, now=now)
        with production(url) as layout:
            layout.start_workers()
            due = time.time()
            layout.start_beat()
            fault_ended = breaking(layout, due)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and (
                len(layout.twilio.messages) < bookings or len(layout.smtp.received) < bookings
            ):
                time.sleep(0.2)
            time.sleep(3)  # anything sent twice would arrive now
            sms, emails = layout.twilio.messages, layout.smtp.received
    last_sms = max((m["received_at"] for m in sms), default=float("nan"))
    last_any = max([last_sms, *(e.time for e in emails)])
    sms_twice = sum(n - 1 for n in Counter(m["to"] for m in sms).values() if n > 1)
    emails_again = sum(n - 1 for n in Counter(e.message["Message-ID"] for e in emails).values() if n > 1)
    figures: dict[str, Any] = {
        "sms": bookings,
        "emails": bookings,
        "sms_lost": bookings - len({m["to"] for m in sms}),
        "emails_lost": bookings - len({e.message["Message-ID"] for e in emails}),
        "sms_duplicated": sms_twice,
        "emails_resent_same_id": emails_again,
        "last_message_after_due_s": last_any - due,
    }
    if fault_ended is not None:
        figures["last_sms_after_fault_ended_s"] = last_sms - fault_ended
        figures["last_message_after_fault_ended_s"] = last_any - fault_ended
    return figures


def _twilio_outage(layout: Layout, due: float, *, seconds: float) -> float:
    layout.twilio.fail_until(seconds=seconds, status=500)
    return time.time() + seconds


def _redis_restart(layout: Layout, due: float) -> float:
    while len(layout.twilio.messages) + len(layout.smtp.received) < 40:
        time.sleep(0.01)
    layout.redis.kill()  # no persistence: every queued task is gone
    layout.redis.start()  # the same port, empty
    return time.time()


def _worker_kill(layout: Layout, due: float) -> float:
    # Twilio holds its answers for a moment, so the kill finds sends in flight.
    layout.twilio.latency = 1.0
    while len(layout.twilio.requests) < 10:
        time.sleep(0.01)
    layout.kill("worker-1")
    layout.twilio.latency = 0.1
    layout.start_worker(1)  # another in its place (worker-2 carried on meanwhile)
    return time.time()


def run(*, quick: bool) -> dict[str, Any]:
    """Full: all three scenarios. Quick (to stay within three minutes with the others): the Twilio outage
    alone, shortened to 10 s with 20 patients."""
    outage = 10.0 if quick else 30.0
    scenarios = [("twilio_outage", partial(_twilio_outage, seconds=outage), 20 if quick else 100)]
    if not quick:
        scenarios += [("redis_restart", _redis_restart, 300), ("worker_kill", _worker_kill, 100)]
    figures: dict[str, Any] = {}
    for name, breaking, bookings in scenarios:
        for key, value in _scenario(bookings, breaking).items():
            figures[f"{name}_{key}"] = value
    return record("faults", outage_seconds=outage, target_lateness_s=60, **figures)
