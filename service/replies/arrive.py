"""What a webhook does with a message someone sent us, and nothing more: store it once, as it came, and
honour a bare carrier keyword — all in the request's one transaction, so an opt-out is in force before
the webhook answers. Everything else (who sent it, triage, paging, our answer) is the inbound worker's
(``service.replies.pipeline``), queued after commit and swept if the queueing is lost
(docs/architecture.md#the-inbox).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from service import audit
from service.celery import PROCESS_INBOUND, enqueue_after_commit
from service.channels.base import InboundMessage
from service.core.enums import Channel, InboundState, Keyword
from service.models import Clinic, Message, id_of
from service.patients.consent import set_sms_opt_out
from service.triage import compliance_keyword


@dataclass(frozen=True)
class Arrived:
    message: Message | None  # None: addressed to no clinic of ours (kept for the operator, not here)
    duplicate: bool = False


def clinic_for(session: Session, inbound: InboundMessage) -> Clinic | None:
    """The clinic a message was sent to: by the number or the address it was sent to, never by who sent
    it (anyone can write a From header)."""
    if inbound.channel == Channel.SMS:
        return session.scalar(select(Clinic).where(col(Clinic.sms_from) == inbound.recipient))
    return session.scalar(select(Clinic).where(func.lower(Clinic.email_from) == inbound.recipient.lower()))


def arrive(session: Session, clinic: Clinic, inbound: InboundMessage, *, now: datetime) -> Arrived:
    """Store one message for ``clinic``. Posting the same provider id again stores nothing new. The caller
    commits; the inbound worker is queued after the commit."""
    existing = _stored(session, id_of(clinic), inbound)
    if existing is not None:
        return Arrived(existing, duplicate=True)
    message = Message(
        clinic_id=id_of(clinic),
        channel=inbound.channel,
        provider_id=inbound.provider_id,
        sender=inbound.sender,
        recipient=inbound.recipient,
        body=inbound.body,
        media=[dict(m) for m in inbound.media],
        received_at=now,
        raw=inbound.raw,
        headers=[[name, value] for name, value in inbound.headers],
        state=InboundState.RECEIVED,
        # Proven later by the worker (an email's DKIM or SPF); an SMS comes from its carrier.
        sender_verified=inbound.channel == Channel.SMS,
    )
    # A carrier keyword alone (STOP, START, HELP and their synonyms) is acted on by the carrier whatever we
    # do: our records agree with it before the webhook answers. Email has no carrier keywords: an opt-out
    # asked for by email is confirmed by a link first (the worker sends it).
    keyword = compliance_keyword(inbound.body) if inbound.channel == Channel.SMS else None
    message.keyword = keyword
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        # The same message posted twice at the same moment: the other request stored it first.
        stored = _stored(session, id_of(clinic), inbound)
        assert stored is not None
        return Arrived(stored, duplicate=True)
    if keyword in (Keyword.STOP, Keyword.START):
        set_sms_opt_out(session, id_of(clinic), inbound.sender, opted_out=keyword == Keyword.STOP, now=now)
    audit.record(
        session, clinic.id, inbound.channel, "message.received", f"message:{message.id}", now,
        keyword=keyword,
    )  # fmt: skip
    enqueue_after_commit(session, PROCESS_INBOUND, message.id)
    return Arrived(message)


def _stored(session: Session, clinic_id: int, inbound: InboundMessage) -> Message | None:
    return session.scalar(
        select(Message).where(
            col(Message.clinic_id) == clinic_id,
            col(Message.channel) == inbound.channel,
            col(Message.provider_id) == inbound.provider_id,
        )
    )
