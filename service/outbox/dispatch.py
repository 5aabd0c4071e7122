"""The dispatcher's pass, run by beat every few seconds: hand back lost rows, mark stuck ones, claim due
ones, and pick the unknown ones due for a look-up at the provider.

Messages wait in the database, never in the broker, so a restarted or flushed Redis loses nothing: a
claimed row whose task vanished is handed back by the sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session

from service.outbox import lifecycle, queries
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DispatchRun:
    due: list[int] = field(default_factory=list)  # claimed: one send task each
    to_reconcile: list[int] = field(default_factory=list)  # unknown: one look-up each
    requeued: int = 0
    stuck: int = 0


def dispatch(session: Session, *, now: datetime, settings: Settings) -> DispatchRun:
    """One dispatcher pass. The caller commits, then enqueues the tasks."""
    run = DispatchRun()
    run.requeued = lifecycle.requeue_lost(
        session, now=now, older_than=timedelta(seconds=settings.QUEUED_STALE_SECONDS)
    )
    run.stuck = lifecycle.mark_stuck(
        session,
        now=now,
        older_than=timedelta(seconds=settings.SENDING_STALE_SECONDS),
        settle_window=timedelta(seconds=settings.SEND_SETTLE_WINDOW_SECONDS),
    )
    # Backpressure: while the workers are behind, due rows wait here, where a cancel or STOP still reaches
    # them and nothing ages into "lost" in the broker's queue.
    room = settings.DISPATCH_MAX_QUEUED - queries.queued_count(session)
    run.due = lifecycle.claim_due(session, now=now, limit=max(0, min(settings.DISPATCH_BATCH_SIZE, room)))
    run.to_reconcile = lifecycle.claim_unknown_for_reconcile(
        session,
        now=now,
        grace=timedelta(seconds=settings.UNKNOWN_GRACE_SECONDS),
        limit=settings.DISPATCH_BATCH_SIZE,
    )
    if run.requeued or run.stuck:
        log.warning("dispatcher handed back %s lost and marked %s stuck rows", run.requeued, run.stuck)
    return run
