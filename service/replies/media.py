"""Patients' photos (MMS): fetched from the provider with the account's credentials, kept by us — in the
database, so every web and worker host can show them — then deleted from the provider, and purged after
the retention period (the message keeps a note that a photo was there)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from service import audit
from service.channels.base import DeliveryError, MediaSource, MediaTooLarge
from service.models import Media, Message

log = logging.getLogger(__name__)


class MediaUnavailable(Exception):
    """The provider could not hand the photo over now: try again later."""


def store(
    session: Session, message_id: int, *, source: MediaSource | None, max_bytes: int, now: datetime
) -> int:
    """Keep every photo of a message not kept yet, then delete them at the provider. Returns how many
    were stored. Raises MediaUnavailable when one should be tried again later."""
    message = session.get(Message, message_id, populate_existing=True)
    if message is None or not message.media or source is None:
        return 0
    items = [dict(item) for item in message.media]
    stored: list[int] = []
    retry = False
    for position, item in enumerate(items):
        if item.get("media_id") or item.get("not_kept"):
            continue
        try:
            fetched = source.fetch_media(item["url"], max_bytes=max_bytes)
        except MediaTooLarge as exc:
            item["not_kept"] = f"too large ({exc})"
            continue
        except DeliveryError as exc:
            if exc.permanent:
                item["not_kept"] = str(exc)
            else:
                retry = True
            continue
        media = Media(
            clinic_id=message.clinic_id, message_id=message_id, position=position, fetched_at=now,
            content_type=fetched.content_type, size=len(fetched.content), data=fetched.content,
        )  # fmt: skip
        session.add(media)
        session.flush()
        item["media_id"] = media.id
        stored.append(position)
    message.media = items  # a new list: the JSON column notices the change
    session.add(message)
    session.commit()
    # Deleted at the provider only once our copy is committed: a crash in between leaves a copy there,
    # never none anywhere. (New dicts: the committed ones must not change under the column's feet.)
    after = [dict(item) for item in items]
    for position in stored:
        try:
            source.delete_media(after[position]["url"])
            after[position]["deleted_at_provider"] = True
        except DeliveryError:
            log.warning("message %s: could not delete photo %s at the provider", message_id, position)
    message.media = after
    session.add(message)
    if stored:
        audit.record(
            session,
            message.clinic_id,
            "worker",
            "media.stored",
            f"message:{message_id}",
            now,
            count=len(stored),
        )
    session.commit()
    if retry:
        raise MediaUnavailable(f"message {message_id}: a photo could not be fetched yet")
    return len(stored)


def purge_old(session: Session, *, now: datetime, days: int) -> int:
    """Drop the content of photos older than the retention period, keeping the record that one was sent."""
    result = session.exec(
        update(Media)
        .where(col(Media.fetched_at) < now - timedelta(days=days), col(Media.purged_at).is_(None))
        .values(data=None, purged_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount
