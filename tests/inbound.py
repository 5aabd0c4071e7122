"""What the inbound worker does, run in the test's own process with the test's clock: every stored message
not yet processed through the pipeline, and the answer it queued, as the patient would read it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from service import db
from service.channels.base import InboundMessage
from service.core.enums import InboundState, MessageKind
from service.models import Message, ScheduledMessage, id_of
from service.outbox.purpose import Address, load_parties, purpose_of
from service.rendering import render
from service.replies import pipeline
from service.replies.arrive import Arrived, arrive, clinic_for
from service.settings import get_settings
from service.triage.loader import load_lexicon
from service.wiring import purposes


def process_received(now: datetime, **options: Any) -> list[pipeline.Outcome]:
    """Process every message still *received*, oldest first, as the inbound worker would."""
    with Session(db.get_engine(), expire_on_commit=False) as session:
        ids = session.scalars(
            select(col(Message.id))
            .where(col(Message.state) == InboundState.RECEIVED)
            .order_by(col(Message.id))
        ).all()
        return [pipeline.process(session, i, now=now, lexicon=load_lexicon(), **options) for i in ids]


def answer_row(session: Session, message_id: int) -> ScheduledMessage | None:
    """The answer the pipeline queued for a message, if any."""
    return session.scalar(
        select(ScheduledMessage).where(
            col(ScheduledMessage.kind) == MessageKind.REPLY,
            col(ScheduledMessage.step) == f"reply-{message_id}",
        )
    )


def answer_text(session: Session, message_id: int) -> str | None:
    """The answer to a message as it would be sent (its SMS, or its email's plain text); None if none."""
    session.expire_all()
    row = answer_row(session, message_id)
    if row is None:
        return None
    assert row.id is not None
    parties = load_parties(session, row.id)
    assert parties is not None
    found = purpose_of(purposes(), row).address(session, parties, get_settings())
    assert isinstance(found, Address), found
    return render(row.template, row.channel, found.language, {**found.context, **row.context}).body


def deliver(session: Session, inbound: InboundMessage, *, now: datetime, process: bool = True) -> Arrived:
    """What the webhook does with a message (store it, a bare STOP or START applied, commit), then — with
    ``process`` — what the inbound worker does with it."""
    clinic = clinic_for(session, inbound)
    assert clinic is not None, "the message is addressed to no clinic"
    arrived = arrive(session, clinic, inbound, now=now)
    session.commit()
    assert arrived.message is not None
    if process and not arrived.duplicate:
        pipeline.process(session, id_of(arrived.message), now=now, lexicon=load_lexicon())
    # The message as it stands now, attached to this session.
    stored = session.get(Message, id_of(arrived.message), populate_existing=True)
    return Arrived(stored, duplicate=arrived.duplicate)
