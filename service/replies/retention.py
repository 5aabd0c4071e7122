"""Retention for what patients wrote: after the retention period the text of a message, an email's raw
MIME and headers, the text triage read and the words its findings quote are dropped; the message's time,
channel, severity and the concepts triage found stay, so the record of what happened (and why staff were
paged) survives."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session, col

from service.models import Message

BATCH = 500


def purge_texts(session: Session, *, now: datetime, days: int) -> int:
    purged = 0
    while True:
        old = session.scalars(
            select(Message)
            .where(col(Message.received_at) < now - timedelta(days=days), col(Message.body) != "")
            .limit(BATCH)
        ).all()
        if not old:
            return purged
        for message in old:
            message.body = ""
            message.triage_text = ""
            message.auto_reply = None
            message.raw = None
            message.headers = []
            message.findings = [{**finding, "words": ""} for finding in message.findings]
            session.add(message)
        session.flush()
        purged += len(old)
