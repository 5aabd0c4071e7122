"""The Celery app, built on demand (``create_celery``), and the one way ``service/`` hands work to it: by
task name, after commit (``enqueue_after_commit``).

``tasks/app.py`` — the module ``celery -A tasks.app`` imports — builds the app and registers the tasks
and the beat schedule on it; ``service/`` never imports a task module, and importing ``service`` builds
nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy import event
from sqlmodel import Session

from service.db import owner_only
from service.settings import Settings

log = logging.getLogger(__name__)

SEND_MESSAGE = "aftercare.send_message"
SEND_MESSAGES = "aftercare.send_messages"
DISPATCH_DUE = "aftercare.dispatch_due"
RECONCILE_MESSAGE = "aftercare.reconcile_message"
RUN_ESCALATION_STEP = "aftercare.run_escalation_step"
PAGE_FAILED = "aftercare.page_failed"
FETCH_MEDIA = "aftercare.fetch_media"
PURGE_EXPIRED = "aftercare.purge_expired"
PROCESS_INBOUND = "aftercare.process_inbound"

SEND_QUEUE = "celery"  # every task but the dispatcher's (the name Celery gives its default queue)
DISPATCH_QUEUE = "dispatch"
# What patients and staff send us, worked by a worker of its own: a morning's backlog of scheduled sends
# never delays the triage of a reply (docs/architecture.md#the-inbox).
INBOUND_QUEUE = "inbound"

# The app that publishes this process's tasks: set by create_celery, never at import.
_publisher: Celery | None = None


def create_celery(settings: Settings) -> Celery:
    """A configured Celery app, which becomes the one this process publishes tasks with."""
    global _publisher
    app = Celery("aftercare")
    configure(app, settings)
    app.set_default()
    _publisher = app
    if not event.contains(Session, "after_commit", _send_pending_tasks):
        event.listen(Session, "after_commit", _send_pending_tasks)
        event.listen(Session, "after_rollback", _drop_pending_tasks)
    return app


class EmbeddedBroker(kombu_sqlalchemy.Transport):
    """kombu's SQLAlchemy transport, polling its SQLite file five times a second instead of once: a page
    or an answer waits a fifth of a second for its worker, not a second. (The interval cannot be given as
    a transport option: kombu hands every option to create_engine.)"""

    polling_interval = 0.2


def configure(app: Celery, settings: Settings) -> None:
    transport_options: dict[str, Any]
    broker_url = settings.broker_url
    transport: str | None = None
    if settings.embedded_broker:
        # kombu passes these to create_engine: wait for the SQLite lock rather than fail.
        transport_options = {"connect_args": {"timeout": 30}}
        broker_url, transport = broker_url.removeprefix("sqla+"), "service.celery:EmbeddedBroker"
        owner_only(broker_url)
    else:
        # Our tasks never carry a long ETA (the outbox holds the schedule), so an hour is ample: only a
        # task that was fetched and not acknowledged waits this long before Redis hands it out again.
        transport_options = {"visibility_timeout": 3600}
    app.conf.update(
        broker_url=broker_url,
        broker_transport=transport,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # Publishing happens inside web requests and the dispatcher: give up quickly when the broker is
        # down (the row stays in the outbox and is swept) rather than hold a request for minutes.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_connection_timeout=3,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # A task is acknowledged after it ran, and handed out again if its worker died mid-task: every task
        # is idempotent (it checks the row is still in the state it expects), so a rerun is harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # The dispatcher has a queue of its own: at a burst its next pass is not stuck behind the sends
        # the last one queued. Each queue has its own exchange and routing key; two queues bound to the
        # same key would each get a copy of every task.
        task_queues=(
            Queue(SEND_QUEUE, Exchange(SEND_QUEUE), routing_key=SEND_QUEUE),
            Queue(DISPATCH_QUEUE, Exchange(DISPATCH_QUEUE), routing_key=DISPATCH_QUEUE),
            Queue(INBOUND_QUEUE, Exchange(INBOUND_QUEUE), routing_key=INBOUND_QUEUE),
        ),
        task_default_queue=SEND_QUEUE,
        task_default_exchange=SEND_QUEUE,
        task_default_routing_key=SEND_QUEUE,
        task_routes={
            DISPATCH_DUE: {"queue": DISPATCH_QUEUE, "routing_key": DISPATCH_QUEUE},
            PROCESS_INBOUND: {"queue": INBOUND_QUEUE, "routing_key": INBOUND_QUEUE},
        },
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )


def enqueue_after_commit(session: Session, task_name: str, *args: Any) -> None:
    """Queue a task once the session's transaction commits; drop it if the transaction rolls back.

    A task queued before its row is committed may run first and find nothing. Losing the enqueue (broker
    down, or no Celery app in this process) is safe: the dispatcher's sweep finds the row again.
    """
    session.info.setdefault("after_commit_tasks", []).append((task_name, args))


def _send_pending_tasks(session: Session) -> None:
    pending = session.info.pop("after_commit_tasks", [])
    if not pending:
        return
    if _publisher is None:
        log.warning("no Celery app in this process; %s task(s) left to the dispatcher's sweep", len(pending))
        return
    # One broker connection and producer for the whole batch (a dispatcher pass publishes hundreds).
    try:
        with _publisher.producer_or_acquire() as producer:
            for task_name, args in pending:
                try:
                    _publisher.send_task(task_name, args=list(args), producer=producer)
                except Exception:  # the broker is down: the sweep will find the row
                    log.warning("could not enqueue %s%r; the dispatcher will pick it up", task_name, args)
    except Exception:  # no connection at all
        log.warning("could not reach the broker; %s task(s) left to the dispatcher's sweep", len(pending))


def _drop_pending_tasks(session: Session) -> None:
    session.info.pop("after_commit_tasks", None)
