"""Messages sent to a number or address no clinic has: kept, never dropped, for the operator to act on
(a number pointed at this service but given to no clinic, a clinic whose number changed). Nobody at a
clinic is told — the message is not theirs — but the operator is, once (the watchdog's
``unrouted_inbound`` alarm, to ALERT_EMAIL only), and `aftercare unrouted` lists them."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from service.channels.base import InboundMessage
from service.models import UnroutedMessage


def store(session: Session, inbound: InboundMessage, *, now: datetime) -> UnroutedMessage:
    """Keep the message once (a provider's retry stores nothing new). The caller commits."""
    existing = _stored(session, inbound)
    if existing is not None:
        return existing
    message = UnroutedMessage(
        channel=inbound.channel,
        provider_id=inbound.provider_id,
        sender=inbound.sender,
        recipient=inbound.recipient,
        body=inbound.body,
        received_at=now,
    )
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        stored = _stored(session, inbound)
        assert stored is not None
        return stored
    return message


def recent(session: Session, *, now: datetime, days: float) -> list[UnroutedMessage]:
    return list(
        session.scalars(
            select(UnroutedMessage)
            .where(col(UnroutedMessage.received_at) >= now - timedelta(days=days))
            .order_by(col(UnroutedMessage.received_at).desc())
            .limit(500)
        )
    )


def masked(sender: str) -> str:
    """Enough of a sender to tell two apart on a console, not enough to be a phone number or address."""
    if "@" in sender:
        local, _, domain = sender.partition("@")
        return f"{local[:1]}…@{domain}"
    return f"…{sender[-2:]}" if len(sender) > 2 else "…"


def _stored(session: Session, inbound: InboundMessage) -> UnroutedMessage | None:
    return session.scalar(
        select(UnroutedMessage).where(
            col(UnroutedMessage.channel) == inbound.channel,
            col(UnroutedMessage.recipient) == inbound.recipient,
            col(UnroutedMessage.provider_id) == inbound.provider_id,
        )
    )
