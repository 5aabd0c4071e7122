"""Lateness under faults with the shipped recovery settings (the fault tests assert the counts with
shortened intervals; this measures the times with the defaults). Each scenario books patients whose
messages are due at once, breaks something, and reports when the last message arrived, and how many were
lost or sent twice:

- ``twilio_outage``: the fake Twilio answers 500 to everything for 30 s, then recovers;
- ``redis_restart``: Redis killed mid-batch and started again empty (every queued task lost);
- ``worker_kill``: a worker SIGKILLed mid-batch (SMS and email in flight), another started;
- ``slow_provider``: the fake Twilio holds every create 30 s, past the client's 10 s timeout, and then
  acts on it anyway: look-ups in between find nothing, and only the settle window keeps them from going twice.

Rows whose request was in flight without an answer wait the settle window (SEND_SETTLE_WINDOW_SECONDS)
before a resend, by design: their lateness is reported apart (``in_flight_rows``, ``last_in_flight_...``).

    .venv/bin/python bench/run.py --only faults [--quick]
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from bench.harness import Layout, database, make_clinic, production, record, seed_bookings, utcnow
from service import db
from service.core.enums import Channel
from service.models import Patient, ScheduledMessage


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
        in_flight = _in_flight_addresses()
    last_sms = max((m["received_at"] for m in sms), default=float("nan"))
    last_any = max([last_sms, *(e.time for e in emails)])
    arrivals = [(m["to"], m["received_at"]) for m in sms] + [(e.message["To"], e.time) for e in emails]
    others = [at for to, at in arrivals if to not in in_flight]
    waited = [at for to, at in arrivals if to in in_flight]
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
        "in_flight_rows": len(in_flight),
        "last_not_in_flight_after_due_s": max(others, default=float("nan")) - due,
        "last_in_flight_after_due_s": max(waited, default=float("nan")) - due,
    }
    if fault_ended is not None:
        figures["last_sms_after_fault_ended_s"] = last_sms - fault_ended
        figures["last_message_after_fault_ended_s"] = last_any - fault_ended
    return figures


def _in_flight_addresses() -> set[str]:
    """The addresses of the rows that waited a settle window: sent without an answer (unknown, or found
    stuck in sending), so that a look-up finding nothing could not yet mean "not sent"."""
    with Session(db.get_engine()) as session:
        rows = session.execute(
            select(ScheduledMessage.channel, Patient.phone, Patient.email)
            .join(Patient, Patient.id == ScheduledMessage.patient_id)  # type: ignore[arg-type]
            .where(ScheduledMessage.settle_after.is_not(None))  # type: ignore[union-attr]
        ).all()
    return {(phone if channel == Channel.SMS else email) or "" for channel, phone, email in rows}


def _slow_provider(layout: Layout, due: float) -> None:
    layout.twilio.accept_late(30.0)  # every create, for the whole scenario
    return None


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
    log = layout.workdir / "worker-1.log"
    # The worker killed must have sends of its own in flight (the other one may have taken the first ones).
    while len(layout.twilio.requests) < 10 or log.read_text(errors="replace").count("] received") < 8:
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
        scenarios += [
            ("redis_restart", _redis_restart, 300),
            ("worker_kill", _worker_kill, 100),
            ("slow_provider", _slow_provider, 100),
        ]
    figures: dict[str, Any] = {}
    for name, breaking, bookings in scenarios:
        for key, value in _scenario(bookings, breaking).items():
            figures[f"{name}_{key}"] = value
    return record("faults", outage_seconds=outage, target_lateness_s=60, **figures)
