"""Bookings a second through the HTTP API of the shipped web processes, each expanding a full care plan
into its outbox rows (PostgreSQL), posted eight at a time as a clinic's booking system would.

    .venv/bin/python bench/run.py --only booking [--quick]
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import Session

from bench.harness import booking_body, database, make_clinic, percentile, production, record, utcnow
from service import db
from service.models import ScheduledMessage

CONCURRENCY = 8


async def _post_all(base: str, key: str, count: int) -> list[float]:
    starts = utcnow() + timedelta(days=2)  # ahead: the whole plan is scheduled, nothing is due
    bodies = [booking_body(number, starts=starts) for number in range(count)]
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as client:

        async def poster(mine: list[dict[str, Any]]) -> None:
            for body in mine:
                started = time.perf_counter()
                response = await client.post("/api/v1/bookings", json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 201:
                    raise RuntimeError(f"booking answered {response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(poster(bodies[n::CONCURRENCY]) for n in range(CONCURRENCY)))
    return latencies


def run(*, quick: bool) -> dict[str, Any]:
    count = 150 if quick else 1000
    with database("postgresql") as url:
        with Session(db.get_engine()) as session:
            _, key = make_clinic(session, now=utcnow())
        with production(url) as layout:
            base = layout.start_web()
            started = time.perf_counter()
            latencies = asyncio.run(_post_all(base, key, count))
            elapsed = time.perf_counter() - started
        with Session(db.get_engine()) as session:
            rows = session.scalar(select(func.count()).select_from(ScheduledMessage)) or 0
    return record(
        "booking",
        bookings=count,
        concurrency=CONCURRENCY,
        per_second=count / elapsed,
        outbox_rows_per_booking=rows / count,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
    )
