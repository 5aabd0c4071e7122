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
from service.sending.send import send_batch_guarded, send_guarded
from service.settings import get_settings
from service.wiring import purposes
from tasks.safety import without_details


@cache
def channels() -> dict[ChannelName, Channel]:
    return build_channels(get_settings())


def media_source() -> MediaSource | None:
    """The SMS provider, when it keeps patients' photos for us to fetch (the console keeps none)."""
    sms = channels()[ChannelName.SMS]
    return sms if isinstance(sms, MediaSource) else None


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
    """A few due rows in one task (the dispatcher packs a burst so), sent together: one load, one commit
    before the provider calls and one after (service/sending/send.py). One bad row never stops the rest,
    and a rerun after a crash sends only what is still queued."""
    outcomes = send_batch_guarded(
        message_ids, now=datetime.now(UTC), channels=channels(), purposes=purposes(), settings=get_settings()
    )
    return [outcome.value for outcome in outcomes]


@shared_task(name=RECONCILE_MESSAGE, ignore_result=True)
@without_details()
def reconcile_message(message_id: int) -> str:
    with session_scope() as session:
        return reconcile(
            session, message_id, now=datetime.now(UTC), channels=channels(), purposes=purposes()
        )
