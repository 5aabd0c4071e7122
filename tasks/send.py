"""Send one outbox row, and settle one whose outcome is unknown. Both are idempotent: they act only on a
row still in the state they expect, so a duplicate or stale task does nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from celery import shared_task

from service.celery import RECONCILE_MESSAGE, SEND_MESSAGE, SEND_MESSAGES
from service.channels import build_channels
from service.channels.base import Channel, MediaSource
from service.core.enums import Channel as ChannelName
from service.db import session_scope
from service.sending.reconcile import reconcile
from service.sending.send import send_guarded
from service.settings import get_settings
from service.wiring import purposes
from tasks.safety import without_details


@cache
def channels() -> dict[ChannelName, Channel]:
    return build_channels(get_settings())


def media_source() -> MediaSource | None:
    """The SMS provider, when it keeps patients' photos for us to fetch (the console keeps none)."""
    sms = channels()[ChannelName.SMS]
    return sms if hasattr(sms, "fetch_media") else None  # type: ignore[return-value]


@shared_task(name=SEND_MESSAGE, ignore_result=True)
@without_details()
def send_message(message_id: int) -> str:
    outcome = send_guarded(
        message_id, now=datetime.now(UTC), channels=channels(), purposes=purposes(), settings=get_settings()
    )
    return outcome.value


@shared_task(name=SEND_MESSAGES, ignore_result=True)
@without_details()
def send_messages(message_ids: list[int]) -> list[str]:
    """A few due rows in one task (the dispatcher packs a burst so): the same send, one after another,
    each in its own transaction and behind its own guard, so one bad row never stops the rest. Each row
    is guarded on its own, so a rerun after a crash sends only what is still queued."""
    settings = get_settings()
    return [
        send_guarded(
            message_id, now=datetime.now(UTC), channels=channels(), purposes=purposes(), settings=settings
        ).value
        for message_id in message_ids
    ]


@shared_task(name=RECONCILE_MESSAGE, ignore_result=True)
@without_details()
def reconcile_message(message_id: int) -> str:
    with session_scope() as session:
        return reconcile(
            session, message_id, now=datetime.now(UTC), channels=channels(), purposes=purposes()
        )
