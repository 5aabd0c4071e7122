"""Patients' replies at a burst: signed inbound SMS posted to the shipped web processes 50 at a time, the
webhook's latency against ``/healthz`` of the same server under the same load, and for urgent replies the
time from the post to the first page reaching the fake Twilio. PostgreSQL and Redis, production layout.

    .venv/bin/python bench/run.py --only inbound [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import Session
from twilio.request_validator import RequestValidator

from bench.harness import (
    cpu_seconds,
    database,
    make_clinic,
    patient_phone,
    percentile,
    production,
    record,
    seed_bookings,
    utcnow,
)
from service import db
from service.core.enums import MessageKind
from service.models import Message, ScheduledMessage

CONCURRENCY = int(os.environ.get("BENCH_INBOUND_CONCURRENCY", "50"))
HEALTH_PROBES = 5  # clients asking /healthz throughout, to measure the same server under the same load
PUBLIC = "https://aftercare.example"
URGENT = "My cheek is swollen and hot and there is yellow pus coming out"
OTHERS = ("Thanks, all good here!", "Can I wear makeup tomorrow?", "bit red and tight, like a sunburn")


def _form(number: int, body: str) -> dict[str, str]:
    sid = f"SM{number:032d}"
    return {
        "MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": patient_phone(number),
        "To": "+12125550100", "Body": body, "NumMedia": "0",
    }  # fmt: skip


async def _load(
    base: str, auth_token: str, forms: list[dict[str, str]], *, concurrency: int
) -> tuple[list[float], list[float], dict[str, float]]:
    validator = RequestValidator(auth_token)
    url = f"{PUBLIC}/webhooks/twilio/sms"
    signed = [(form, validator.compute_signature(url, form)) for form in forms]
    posted_at: dict[str, float] = {}
    webhook_ms: list[float] = []
    health_ms: list[float] = []
    queue: asyncio.Queue[tuple[dict[str, str], str]] = asyncio.Queue()
    for item in signed:
        queue.put_nowait(item)
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency + HEALTH_PROBES)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def poster() -> None:
            while not queue.empty():
                form, signature = queue.get_nowait()
                started = time.perf_counter()
                posted_at[form["MessageSid"]] = time.time()
                response = await client.post(
                    "/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature}
                )
                webhook_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:200]}")

        async def prober() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await client.get("/healthz")
                health_ms.append((time.perf_counter() - started) * 1000)

        probes = [asyncio.create_task(prober()) for _ in range(HEALTH_PROBES)]
        await asyncio.gather(*(poster() for _ in range(concurrency)))
        done.set()
        await asyncio.gather(*probes)
    return webhook_ms, health_ms, posted_at


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants (uvicorn's and Celery's children included)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += cpu_seconds(current)
        todo.extend(children.get(current, []))
    return total


def _cpu(layout: Any) -> dict[str, float]:
    return {name: _tree_cpu(p.pid) for name, p in layout.processes.items() if p.poll() is None}


def _wait_for_pages(twilio: Any, posted_at: dict[str, float], urgent: int) -> list[float]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_first_pages(twilio, posted_at)) < urgent:
        time.sleep(0.5)
    return _first_pages(twilio, posted_at)


def _first_pages(twilio: Any, posted_at: dict[str, float]) -> list[float]:
    """Seconds from each urgent reply's post to its escalation's first page at the fake Twilio."""
    arrived = {m["sid"]: m["received_at"] for m in twilio.messages}
    with Session(db.get_engine()) as session:
        replies = session.execute(
            select(Message.escalation_id, Message.provider_id).where(Message.escalation_id.is_not(None))  # type: ignore[union-attr]
        ).all()
        pages = session.execute(
            select(ScheduledMessage.escalation_id, ScheduledMessage.provider_id).where(
                ScheduledMessage.kind == MessageKind.PAGE,
                ScheduledMessage.provider_id.is_not(None),  # type: ignore[union-attr]
            )
        ).all()
    posted: dict[int, float] = {}
    for escalation_id, sid in replies:
        if sid in posted_at:
            posted[escalation_id] = min(posted.get(escalation_id, posted_at[sid]), posted_at[sid])
    first: dict[int, float] = {}
    for escalation_id, sid in pages:
        if sid in arrived:
            first[escalation_id] = min(first.get(escalation_id, arrived[sid]), arrived[sid])
    return [first[e] - posted[e] for e in first if e in posted]


def run(*, quick: bool) -> dict[str, Any]:
    """A burst (``CONCURRENCY`` at a time) and then a trickle (5 at a time) of replies, one in five urgent."""
    posts = 150 if quick else 500
    trickle = 50 if quick else 100
    forms = [_form(n, URGENT if n % 5 == 0 else OTHERS[n % 3]) for n in range(posts + trickle)]
    with database("postgresql") as url:
        now = utcnow()
        with Session(db.get_engine()) as session:
            clinic, _ = make_clinic(session, now=now, staff=2)
            seed_bookings(session, clinic, posts + trickle, now=now)
        # Nothing due for the patients meanwhile: only the pages and answers are sent during the load.
        with Session(db.get_engine()) as session:
            session.query(ScheduledMessage).delete()
            session.commit()
        with production(url) as layout:
            layout.start_workers()  # the sending workers and (since the inbox) the inbound worker
            layout.start_beat()
            base = layout.start_web()
            cpu_before = _cpu(layout)
            started = time.perf_counter()
            try:
                webhook_ms, health_ms, posted_at = asyncio.run(
                    _load(base, layout.twilio.auth_token, forms[:posts], concurrency=CONCURRENCY)
                )
            except RuntimeError:
                print((layout.workdir / "web.log").read_text(errors="replace")[-3000:])
                raise
            elapsed = time.perf_counter() - started
            to_page = _wait_for_pages(layout.twilio, posted_at, len(range(0, posts, 5)))
            cpu_after = _cpu(layout)
            _, _, trickle_posted = asyncio.run(
                _load(base, layout.twilio.auth_token, forms[posts:], concurrency=5)
            )
            to_page_trickle = _wait_for_pages(
                layout.twilio, trickle_posted, len(range(posts, posts + trickle, 5))
            )
    webhook_p95, health_p95 = percentile(webhook_ms, 95), percentile(health_ms, 95)
    cpu_ms = {name: (cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / posts for name in cpu_after}
    return record(
        "inbound",
        posts=posts,
        concurrency=CONCURRENCY,
        replies_per_second=posts / elapsed,
        webhook_p50_ms=percentile(webhook_ms, 50),
        webhook_p95_ms=webhook_p95,
        healthz_p50_ms=percentile(health_ms, 50),
        healthz_p95_ms=health_p95,
        ratio=webhook_p95 / health_p95,
        urgent=len(range(0, posts, 5)),
        paged=len(to_page),
        first_page_p50_s=percentile(to_page, 50),
        first_page_p95_s=percentile(to_page, 95),
        first_page_max_s=max(to_page, default=float("nan")),
        trickle_posts=trickle,
        trickle_first_page_p50_s=percentile(to_page_trickle, 50),
        trickle_first_page_p95_s=percentile(to_page_trickle, 95),
        # CPU per reply of the burst, by process (web: the webhooks; inbound: the pipeline; worker-N: the
        # pages and answers sent), including everything each process did meanwhile.
        **{f"cpu_ms_per_reply_{name.replace('-', '_')}": value for name, value in sorted(cpu_ms.items())},
        target_webhook_p95_ms=100,
        target_ratio=1.5,
        target_first_page_max_s=10,
        target_trickle_first_page_p95_s=2,
    )
