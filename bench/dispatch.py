"""The 08:00 burst: due messages through beat, the shipped workers and the real Twilio client to the fake
Twilio answering after 100 ms (and to the fake SMTP server), end to end, against a serial loop of the bare
Twilio client on the same server. PostgreSQL and Redis, the production layout.

    .venv/bin/python bench/run.py --only dispatch [--quick]
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from bench.harness import (
    database,
    make_clinic,
    production,
    record,
    seed_bookings,
    serial_twilio_rate,
    utcnow,
)
from service import db
from service.core.enums import Channel, MessageStatus
from service.models import ScheduledMessage as SM


def run(*, quick: bool) -> dict[str, Any]:
    messages = 1000 if quick else 5000
    with database("postgresql") as url:
        now = utcnow()
        with Session(db.get_engine()) as session:
            clinic, _ = make_clinic(session, now=now)
            seed_bookings(session, clinic, messages // 2, now=now)
            due = dict(
                session.execute(
                    select(SM.channel, func.count())
                    .where(SM.status == MessageStatus.SCHEDULED, SM.send_at <= utcnow())  # type: ignore[arg-type]
                    .group_by(SM.channel)
                ).all()
            )
        sms_due, email_due = due.get(Channel.SMS, 0), due.get(Channel.EMAIL, 0)
        with production(url) as layout:
            serial = serial_twilio_rate(layout.twilio, 30 if quick else 100)
            layout.twilio.clear()
            layout.start_workers()
            idle = layout.cpu()  # start-up is not part of the burst
            layout.start_beat()
            deadline = time.monotonic() + 60 + (sms_due + email_due) / 5
            while time.monotonic() < deadline:
                if len(layout.twilio.messages) >= sms_due and len(layout.smtp.received) >= email_due:
                    break
                time.sleep(0.2)
            cpu = layout.cpu()
            time.sleep(2)  # anything sent twice would arrive now
            sms = layout.twilio.messages
            emails = layout.smtp.received
        arrivals = [m["received_at"] for m in sms] + [e.time for e in emails]
        elapsed = max(arrivals) - min(arrivals) if len(arrivals) > 1 else float("nan")
        sms_twice = sum(n - 1 for n in Counter(m["to"] for m in sms).values() if n > 1)
        emails_twice = sum(n - 1 for n in Counter(e.message["Message-ID"] for e in emails).values() if n > 1)
        delivered = len(sms) + len(emails) - sms_twice - emails_twice
        rate = delivered / elapsed
        return record(
            "dispatch",
            messages=sms_due + email_due,
            delivered=delivered,
            lost=sms_due + email_due - delivered,
            sms_duplicated=sms_twice,
            emails_duplicated=emails_twice,
            seconds=elapsed,
            per_second=rate,
            serial_per_second=serial,
            ratio=rate / serial,
            target_ratio=20,
            worker_cpu_ms_per_message=1000
            * sum(v - idle.get(k, 0.0) for k, v in cpu.items() if k.startswith("worker"))
            / max(delivered, 1),
            beat_cpu_seconds=cpu.get("beat", 0.0),
        )
