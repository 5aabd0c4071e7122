"""The Celery app with every task registered and the beat schedule: `celery -A tasks.app worker|beat`."""

from __future__ import annotations

from service.queue import DISPATCH_DUE, celery_app
from service.settings import get_settings
from tasks import dispatch, send  # noqa: F401  (registers the tasks)

app = celery_app

# One dispatcher pass every few seconds; a pass that finds nothing costs one indexed query. Run exactly one
# beat: two would only claim the same rows twice in vain (the claim is guarded), but it is wasted work.
app.conf.beat_schedule = {
    "dispatch-due-messages": {
        "task": DISPATCH_DUE,
        "schedule": get_settings().DISPATCH_INTERVAL_SECONDS,
        # A pass that waited longer than its interval is superseded by the next one.
        "options": {"expires": max(get_settings().DISPATCH_INTERVAL_SECONDS * 2, 10)},
    },
}
