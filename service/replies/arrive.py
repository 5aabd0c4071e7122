"""What a webhook does with a message someone sent us, and nothing more: store it once, as it came, and
honour a bare carrier keyword — all in the request's one transaction, so an opt-out is in force before
the webhook answers. Everything else (who sent it, triage, paging, our answer) is the inbound worker's
(``service.replies.pipeline``), queued after commit and swept if the queueing is lost
(docs/architecture.md#the-inbox).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from service import audit
from service.celery import PROCESS_INBOUND, enqueue_after_commit
from service.channels.base import InboundMessage
from service.core.enums import Channel, InboundState, Keyword
from service.db import is_postgres
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
    commits; the inbound worker is queued after the commit.

    A webhook's whole work is this one insert (docs/architecture.md#the-inbox): one statement that stores
    the message unless the provider posted it before (``ON CONFLICT DO NOTHING`` on its unique provider
    id, so two identical posts at the same moment store it once), and the audit row.
    """
    # A carrier keyword alone (STOP, START, HELP and their synonyms) is acted on by the carrier whatever we
    # do: our records agree with it before the webhook answers. Email has no carrier keywords: an opt-out
    # asked for by email is confirmed by a link first (the worker sends it).
    keyword = compliance_keyword(inbound.body) if inbound.channel == Channel.SMS else None
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
        keyword=keyword,
        # Proven later by the worker (an email's DKIM or SPF); an SMS comes from its carrier.
        sender_verified=inbound.channel == Channel.SMS,
    )
    values = {column.name: getattr(message, column.name) for column in _COLUMNS}
    insert = _insert_for(session)(Message).values(**values)
    stored_id = session.scalar(
        insert.on_conflict_do_nothing(index_elements=_UNIQUE).returning(col(Message.id))
    )
    if stored_id is None:
        existing = _stored(session, id_of(clinic), inbound)
        assert existing is not None
        return Arrived(existing, duplicate=True)
    message.id = stored_id
    if keyword in (Keyword.STOP, Keyword.START):
        set_sms_opt_out(session, id_of(clinic), inbound.sender, opted_out=keyword == Keyword.STOP, now=now)
    audit.record(
        session, clinic.id, inbound.channel, "message.received", f"message:{stored_id}", now, keyword=keyword,
    )  # fmt: skip
    enqueue_after_commit(session, PROCESS_INBOUND, stored_id)
    return Arrived(message)


# Every column but the id, for the one INSERT (SQLModel does not type ``__table__``, hence sa.inspect).
_COLUMNS = [column for column in sa_inspect(Message).columns if column.name != "id"]
_UNIQUE = ["clinic_id", "channel", "provider_id"]


def _insert_for(session: Session) -> Any:
    """The dialect's INSERT, which knows ``ON CONFLICT DO NOTHING`` (PostgreSQL and SQLite alike)."""
    return postgresql.insert if is_postgres(session) else sqlite.insert


def _stored(session: Session, clinic_id: int, inbound: InboundMessage) -> Message | None:
    return session.scalar(
        select(Message).where(
            col(Message.clinic_id) == clinic_id,
            col(Message.channel) == inbound.channel,
            col(Message.provider_id) == inbound.provider_id,
        )
    )
