"""Liveness and Prometheus metrics. The metrics are read from the outbox at scrape time, so they show what
every worker did, and a stalled dispatcher shows up as overdue messages rather than as silence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from service.api.deps import NowDep
from service.db import get_engine
from service.outbox import queries

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


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(OutboxCollector())
    return registry


@router.get("/healthz")
def healthz(now: NowDep) -> dict[str, str | int]:
    """Liveness (200 while the web process and its database answer), plus whether messages are flowing:
    ``overdue_messages`` above zero means beat or the workers are down and patients are not being sent
    their messages."""
    try:
        with Session(get_engine()) as session:
            late, _ = queries.overdue(session, now=now, grace=OVERDUE_AFTER)
    except SQLAlchemyError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"database unreachable: {exc.__class__.__name__}"
        ) from exc
    return {"status": "ok" if late == 0 else "messages overdue: is beat running?", "overdue_messages": late}


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
