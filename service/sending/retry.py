"""When to try a transient failure again: exponential backoff with a cap, and a last attempt."""

from __future__ import annotations

from datetime import datetime, timedelta

from celery.utils.time import get_exponential_backoff_interval

from service.settings import Settings


def retry_at(attempts: int, *, now: datetime, settings: Settings) -> datetime | None:
    """When to send again after ``attempts`` failed attempts; None when they are used up."""
    if attempts >= settings.MAX_SEND_ATTEMPTS:
        return None
    delay = get_exponential_backoff_interval(
        factor=int(settings.RETRY_BACKOFF_BASE_SECONDS) or 1,
        retries=attempts - 1,
        maximum=int(settings.RETRY_BACKOFF_MAX_SECONDS),
        full_jitter=False,
    )
    return now + timedelta(seconds=delay)
