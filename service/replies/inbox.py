"""The staff inbox: routine replies and messages from unknown or shared phones, answered by a person.

A staff answer goes through the outbox (so it is retried, recorded, and shows in the timeline) to the
patient, or to the sender's own number or address when they are no patient of ours.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from service import audit
from service.celery import SEND_MESSAGE, enqueue_after_commit
from service.core.enums import Channel, InboxState, MessageKind
from service.models import Message, StaffMember, id_of
from service.outbox import lifecycle
from service.outbox.lifecycle import NewRow

MAX_REPLY_LENGTH = 600  # about four SMS segments: an answer, not a letter


class NotFound(LookupError):
    """No such message at this clinic."""


def get(session: Session, clinic_id: int, message_id: int) -> Message:
    message = session.get(Message, message_id, populate_existing=True)
    if message is None or message.clinic_id != clinic_id:
        raise NotFound(f"no message {message_id} at this clinic")
    return message


def waiting(session: Session, clinic_id: int) -> list[Message]:
    """Oldest first: the longest-waiting patient is answered first."""
    return list(
        session.scalars(
            select(Message)
            .where(col(Message.clinic_id) == clinic_id, col(Message.inbox_state) == InboxState.NEEDS_REPLY)
            .order_by(col(Message.received_at), col(Message.id))
        )
    )


def reply(session: Session, message: Message, *, staff: StaffMember, text: str, now: datetime) -> int:
    """Queue a staff member's answer; returns its outbox id. Raises ValueError for an empty or long text."""
    text = text.strip()
    if not text:
        raise ValueError("write an answer first")
    if len(text) > MAX_REPLY_LENGTH:
        raise ValueError(f"an answer has at most {MAX_REPLY_LENGTH} characters")
    to_address = None if message.patient_id and not message.ambiguous_patient else message.sender
    assert message.id is not None and staff.id is not None
    row = lifecycle.queue_now(
        session,
        NewRow(
            kind=MessageKind.STAFF_REPLY,
            clinic_id=message.clinic_id,
            patient_id=message.patient_id,
            booking_id=message.booking_id,
            staff_member_id=staff.id,
            to_address=to_address,
            step=f"staff-reply-{message.id}-{now.timestamp():.0f}",
            channel=Channel(message.channel),
            template="staff_reply",
            send_at=now,
            context={"text": text},
        ),
        now=now,
    )
    assert row is not None
    message.inbox_state = InboxState.REPLIED
    message.replied_at = now
    message.replied_by_id = staff.id
    session.add(message)
    enqueue_after_commit(session, SEND_MESSAGE, row.id)
    audit.record(
        session, message.clinic_id, f"staff:{staff.id}", "message.replied", f"message:{message.id}", now
    )
    return id_of(row)


def dismiss(session: Session, message: Message, *, staff: StaffMember, now: datetime) -> None:
    """Nothing to answer (a thank-you the triage could not place): out of the inbox, on the record."""
    message.inbox_state = InboxState.DISMISSED
    message.replied_at = now
    message.replied_by_id = staff.id
    session.add(message)
    audit.record(
        session, message.clinic_id, f"staff:{staff.id}", "message.dismissed", f"message:{message.id}", now
    )
