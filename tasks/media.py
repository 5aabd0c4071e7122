"""Fetch and keep a message's photos; purge photos past the retention period."""

from __future__ import annotations

from datetime import UTC, datetime

from celery import shared_task

from service.celery import FETCH_MEDIA, PURGE_EXPIRED
from service.db import session_scope
from service.replies import media
from service.settings import get_settings
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
def purge_expired() -> dict[str, int]:
    settings = get_settings()
    with session_scope() as session:
        photos = media.purge_old(session, now=datetime.now(UTC), days=settings.MEDIA_RETENTION_DAYS)
    return {"photos": photos}
