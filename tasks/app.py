"""The Celery entry point: `celery -A tasks.app worker|beat`. The only module that builds the app at
import: it creates it from the settings, registers every task and sets the beat schedule."""

from __future__ import annotations

from celery.signals import worker_init

from service.celery import DISPATCH_DUE, PURGE_EXPIRED, create_celery
from service.core.plans import PlanError
from service.db import get_engine
from service.scheduling.care_plans import check_plans
from service.settings import get_settings
from service.triage.loader import load_lexicon
from service.wiring import purposes

settings = get_settings()
app = create_celery(settings)

from tasks import dispatch, inbound, media, paging, send  # noqa: E402,F401  (registers the tasks on the app just built)


@worker_init.connect
def _warm_up(**_: object) -> None:
    """Check the care plans, and build the channels (and the provider clients' imports), the purposes and
    the database engine (and its driver's import), as the worker starts, not inside the first burst's sends.

    A worker with a broken plan must not start: every send of the missing template would fail. Celery
    logs an exception raised by a signal handler and carries on, so the refusal is a SystemExit, which it
    does not catch: the worker exits with one line naming the file, the step and the template.
    """
    try:
        check_plans()
    except PlanError as error:
        raise SystemExit(f"aftercare: {error}") from None
    send.channels()
    purposes()
    load_lexicon()  # the inbound worker's first message must not wait for the vocabularies to compile
    get_engine()  # no connection yet: a pool that forks its workers must not share one


# One dispatcher pass every few seconds; a pass that finds nothing costs one indexed query. Run exactly one
# beat: two would only claim the same rows twice in vain (the claim is guarded), but it is wasted work.
app.conf.beat_schedule = {
    "dispatch-due-messages": {
        "task": DISPATCH_DUE,
        "schedule": settings.DISPATCH_INTERVAL_SECONDS,
        # A pass that waited longer than its interval is superseded by the next one.
        "options": {"expires": max(settings.DISPATCH_INTERVAL_SECONDS * 2, 10)},
    },
    # Retention: photos (and, with the hardening issue, bodies) past their period, once an hour.
    "purge-expired": {"task": PURGE_EXPIRED, "schedule": 3600.0},
}
