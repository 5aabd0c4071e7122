"""The inbound worker's task: one stored message through the pipeline (service/replies/pipeline.py).

It runs on a queue of its own (``-Q inbound``), so a morning's backlog of scheduled sends never delays the
triage of a reply. A failed try is retried with backoff; a task lost altogether (broker down at the
webhook's commit, a worker killed) is found again by the dispatcher's sweep.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import shared_task

from service.celery import PROCESS_INBOUND
from service.db import session_scope
from service.replies import pipeline
from service.triage.loader import load_lexicon
from tasks.safety import without_details

log = logging.getLogger(__name__)


class TryAgain(Exception):
    """Processing failed and the message has tries left: Celery retries the task with backoff."""


@shared_task(
    name=PROCESS_INBOUND,
    ignore_result=True,
    autoretry_for=(TryAgain,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=False,
    max_retries=pipeline.MAX_ATTEMPTS,
)
@without_details(TryAgain)
def process_inbound(message_id: int) -> str:
    with session_scope() as session:
        outcome = pipeline.process(session, message_id, now=datetime.now(UTC), lexicon=load_lexicon())
    log.info("inbound message %s: %s, severity %s", message_id, outcome.state, outcome.severity)
    if outcome.state == "retry":
        raise TryAgain(f"inbound message {message_id}")
    return outcome.state
