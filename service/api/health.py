"""Liveness and Prometheus metrics. The metrics are read from the outbox at scrape time, so they show what
every worker did, and a stalled dispatcher shows up as overdue messages rather than as silence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from service.api.deps import NowDep, SettingsDep
from service.clinics import clinics_without_first_level
from service.db import get_engine
from service.monitoring import alarms
from service.monitoring.checks import problems
from service.outbox import queries
from service.paging import queries as paging_queries

router = APIRouter(tags=["health"])

# A due message not claimed within this long means the dispatcher (beat) or the workers are not running.
OVERDUE_AFTER = timedelta(minutes=2)


class OutboxCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        by_status = GaugeMetricFamily(
            "aftercare_outbox_messages", "Outbox rows by status and channel", labels=["status", "channel"]
        )
        overdue = GaugeMetricFamily(
            "aftercare_outbox_overdue_messages",
            "Scheduled rows due more than 2 minutes ago and not yet claimed",
        )
        oldest = GaugeMetricFamily(
            "aftercare_outbox_oldest_overdue_seconds", "Age of the oldest due but unclaimed row (0 when none)"
        )
        with Session(get_engine()) as session:
            for row_status, channel, count in queries.counts_by_status(session):
                by_status.add_metric([row_status, channel], count)
            late, oldest_due = queries.overdue(session, now=now, grace=OVERDUE_AFTER)
        overdue.add_metric([], late)
        oldest.add_metric([], (now - oldest_due).total_seconds() if oldest_due else 0.0)
        yield by_status
        yield overdue
        yield oldest


# Seconds: from an alarming message to its first page, and from the first page to a person acknowledging.
FIRST_PAGE_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300)
ACK_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


class PagingCollector(Collector):
    """Read from the database at scrape time, so what every worker did reaches the web process."""

    def collect(self) -> Iterator[Any]:
        open_by_severity = GaugeMetricFamily(
            "aftercare_open_escalations", "Escalations paging now, by severity", labels=["severity"]
        )
        pages = GaugeMetricFamily(
            "aftercare_pages",
            "Pages sent to staff, by outcome (outbox status)",
            labels=["outcome", "channel"],
        )
        with Session(get_engine()) as session:
            for severity, count in paging_queries.open_by_severity(session):
                open_by_severity.add_metric([severity], count)
            for outcome, channel, count in paging_queries.pages_by_outcome(session):
                pages.add_metric([outcome, channel], count)
            first_page = paging_queries.seconds_to_first_page(session)
            to_ack = paging_queries.seconds_to_acknowledge(session)
        yield open_by_severity
        yield pages
        yield _histogram(
            "aftercare_inbound_to_first_page_seconds", "From an alarming message to its first page",
            first_page, FIRST_PAGE_BUCKETS,
        )  # fmt: skip
        yield _histogram(
            "aftercare_time_to_acknowledge_seconds", "From the first page to a person acknowledging",
            to_ack, ACK_BUCKETS,
        )  # fmt: skip


def _histogram(
    name: str, documentation: str, values: list[float], buckets: tuple[int, ...]
) -> HistogramMetricFamily:
    counts = [sum(1 for v in values if v <= bound) for bound in buckets]
    family = HistogramMetricFamily(name, documentation)
    family.add_metric(
        [], [(str(float(b)), c) for b, c in zip(buckets, counts, strict=True)] + [("+Inf", len(values))],
        sum_value=sum(values),
    )  # fmt: skip
    return family


class AlarmCollector(Collector):
    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "aftercare_alarm_active", "Silent-failure alarms raised and not cleared", labels=["kind"]
        )
        with Session(get_engine()) as session:
            for alarm in alarms.active(session):
                family.add_metric([alarm.kind], 1)
        yield family


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(OutboxCollector())
    registry.register(PagingCollector())
    registry.register(AlarmCollector())
    return registry


@router.get("/healthz")
def healthz(now: NowDep) -> dict[str, str | int]:
    """Liveness (200 while the web process and its database answer), plus what staff should know:
    ``overdue_messages`` above zero means beat or the workers are down; ``clinics_without_staff`` counts
    clinics whose urgent replies would page nobody."""
    try:
        with Session(get_engine()) as session:
            late, _ = queries.overdue(session, now=now, grace=OVERDUE_AFTER)
            unstaffed = len(clinics_without_first_level(session))
    except SQLAlchemyError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"database unreachable: {exc.__class__.__name__}"
        ) from exc
    problems = []
    if late:
        problems.append("messages overdue: is beat running?")
    if unstaffed:
        problems.append("clinics without staff to page: add them with `aftercare staff add --level 1`")
    return {
        "status": "; ".join(problems) or "ok",
        "overdue_messages": late,
        "clinics_without_staff": unstaffed,
    }


class DeliveryProblems(BaseModel):
    status: str
    problems: list[str]


@router.get(
    "/healthz/delivery",
    response_model=DeliveryProblems,
    responses={503: {"description": "Messages are not flowing: the reasons", "model": DeliveryProblems}},
)
def delivery(request: Request, settings: SettingsDep, now: NowDep) -> JSONResponse:
    """200 while messages flow; 503 with the reasons while they do not (beat or the dispatcher silent, due
    messages unsent, failures spiking, an escalation step overdue). `/healthz` stays plain liveness."""
    with Session(get_engine()) as session:
        found = problems(session, now=now, settings=settings, watching_since=request.app.state.watching_since)
    if found:
        return JSONResponse({"status": "failing", "problems": [p.reason for p in found]}, status_code=503)
    return JSONResponse({"status": "ok", "problems": []})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
