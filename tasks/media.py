"""Fetch and keep a message's photos; purge photos past the retention period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from celery import shared_task

from service.celery import FETCH_MEDIA, PURGE_EXPIRED
from service.db import session_scope
from service.outbox.retention import purge_bodies
from service.replies import media, replay
from service.replies.retention import purge_texts
from service.settings import get_settings
from tasks.safety import without_details
from tasks.send import media_source


@shared_task(
    name=FETCH_MEDIA,
    ignore_result=True,
    # Only the named, transient failure is retried, a few times with backoff: a photo is worth a retry,
    # a broken one is recorded on the message and left.
    autoretry_for=(media.MediaUnavailable,),
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=5,
)
@without_details(media.MediaUnavailable)
def fetch_media(message_id: int) -> int:
    settings = get_settings()
    with session_scope() as session:
        return media.store(
            session,
            message_id,
            source=media_source(),
            max_bytes=settings.MEDIA_MAX_BYTES,
            now=datetime.now(UTC),
        )


@shared_task(name=PURGE_EXPIRED, ignore_result=True)
@without_details()
def purge_expired() -> dict[str, int]:
    """Retention, once an hour: photos, message texts and bodies past their periods, spent webhook tokens."""
    settings = get_settings()
    now = datetime.now(UTC)
    with session_scope() as session:
        photos = media.purge_old(session, now=now, days=settings.MEDIA_RETENTION_DAYS)
        texts = purge_texts(session, now=now, days=settings.RETENTION_DAYS)
        bodies = purge_bodies(session, now=now, days=settings.RETENTION_DAYS)
        tokens = replay.forget_older_than(session, now=now, age=timedelta(hours=1))
    return {"photos": photos, "texts": texts, "bodies": bodies, "tokens": tokens}
