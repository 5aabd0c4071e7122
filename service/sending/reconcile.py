"""Settle a row whose send may or may not have reached the provider, by asking the provider.

Found → sent. Not there, and the provider can no longer act on it (its settle window has passed) →
scheduled again, to be sent now. Not there yet, or cannot tell → stays unknown and is asked again after
the grace period. Never a blind resend of an SMS: a slow API may create a message after our client gave
up on the request, so an empty look-up inside the window proves nothing
(docs/architecture.md#delivery-guarantee).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlmodel import Session

from service.channels.base import Channel, DeliveryError, OutgoingMessage
from service.core.enums import Channel as ChannelName
from service.core.enums import MessageStatus
from service.outbox import lifecycle
from service.outbox.purpose import Purposes, load_parties, purpose_of

log = logging.getLogger(__name__)

# How far before the send we look for the provider's record (clocks differ a little).
LOOKBACK = timedelta(minutes=5)


def reconcile(
    session: Session,
    message_id: int,
    *,
    now: datetime,
    channels: Mapping[ChannelName, Channel],
    purposes: Purposes,
) -> str:
    parties = load_parties(session, message_id)
    if parties is None or parties.row.status != MessageStatus.UNKNOWN:
        return "not_unknown"
    row, clinic = parties.row, parties.clinic
    channel = ChannelName(row.channel)
    probe = OutgoingMessage(
        outbox_id=message_id,
        channel=channel,
        to=purpose_of(purposes, row).recipient(session, parties) or "",
        sender=clinic.sms_from if channel == ChannelName.SMS else clinic.email_from,
        body=row.body or "",
    )
    since = (row.sending_at or row.updated_at) - LOOKBACK
    try:
        receipt = channels[channel].lookup(probe, since=since)
    except DeliveryError:
        log.warning("message %s: the provider could not tell; will ask again", message_id)
        return "still_unknown"
    if receipt is not None:
        settled = lifecycle.settle_sent(
            session, message_id, now=now, provider_id=receipt.provider_id, sent_at=row.sending_at or now
        )
        outcome = "sent"
    elif row.settle_after is not None and now < row.settle_after:
        # Asked again after the grace period (the claim noted this look-up), until the window has passed.
        log.info("message %s: not at the provider yet; it may be until %s", message_id, row.settle_after)
        session.commit()
        return "not_yet"
    else:
        settled = lifecycle.settle_not_sent(
            session,
            message_id,
            now=now,
            error=f"not found at the provider after an unsure send: {row.last_error}",
        )
        outcome = "rescheduled"
    session.commit()
    # A status callback may have settled it in the meantime; then there is nothing more to do.
    return outcome if settled else "already_settled"
