"""Why an outbox row exists, as one object: the only place that knows what a kind of row means.

The outbox and the send path move, render, send and settle rows without looking at their kind; everything
that depends on it is asked of the row's purpose (docs/architecture.md#purposes):

- ``recipient``: where the row goes on its channel (for the send and for a look-up at the provider);
- ``address``: that, with the language and template context, or why the row may not go now;
- ``may_go``: the same "may it go" as SQL, added to the one guarded UPDATE that starts a send, so a STOP
  or a cancel committed a moment before still wins;
- ``after_failure`` / ``after_suppressed``: what follows when the row fails for good or is held back.

Each purpose lives in the package that owns its reason (care messages in ``service.scheduling``, answers
in ``service.replies``, pages in ``service.paging``). The entry points (tasks, the web app) build the map
from kind to purpose and pass it in, as they do channels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, bindparam, select
from sqlmodel import Session, col

from service.core.enums import MessageKind, RecipientProblem
from service.models import Booking, Clinic, Patient, ScheduledMessage
from service.settings import Settings


@dataclass(frozen=True)
class Parties:
    """An outbox row and everything it is sent on behalf of, as they are now (loaded in one round trip)."""

    row: ScheduledMessage
    clinic: Clinic
    booking: Booking | None
    patient: Patient | None


@dataclass(frozen=True)
class Address:
    """Where, in which language and with what a row renders: what a purpose tells the send path."""

    to: str
    language: str
    context: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # The timezone whose quiet hours hold this row back (a care SMS: the patient's); None: it goes at once.
    quiet_hours_zone: str | None = None


class Purpose(Hashable, Protocol):
    """One object per process and kind: it keys the cache of the statement that starts a send."""

    kind: MessageKind

    def recipient(self, session: Session, parties: Parties) -> str | None:
        """The row's address on its channel, or None when there is none."""
        ...

    def address(self, session: Session, parties: Parties, settings: Settings) -> Address | str:
        """Where and how the row goes now, or why it may not (a reason for staff, never a detail)."""
        ...

    def may_go(self) -> Sequence[ColumnElement[bool]]:
        """Conditions on ``ScheduledMessage`` (and what it refers to) that must hold when the send starts.
        Built once per process (the statement is cached), so they take no parameters."""
        ...

    def after_failure(
        self, session: Session, row: ScheduledMessage, *, problem: RecipientProblem | None, now: datetime
    ) -> None:
        """What follows the row failing for good (on our side, at the provider or in a delivery report)."""
        ...

    def after_suppressed(self, session: Session, parties: Parties, *, now: datetime) -> None:
        """What follows the row being held back at send time."""
        ...


Purposes = Mapping[MessageKind, Purpose]


class UnknownPurpose(LookupError):
    """A row whose kind this process was not given a purpose for: a wiring mistake, never the row's."""


def purpose_of(purposes: Purposes, row: ScheduledMessage) -> Purpose:
    try:
        return purposes[MessageKind(row.kind)]
    except KeyError:
        raise UnknownPurpose(
            f"no purpose for outbox rows of kind {row.kind!r}; build the map with service.wiring.purposes()"
        ) from None


_ROW_WITH_PARTIES = (
    select(ScheduledMessage, Clinic, Booking, Patient)
    .join(Clinic, col(Clinic.id) == col(ScheduledMessage.clinic_id))
    .outerjoin(Booking, col(Booking.id) == col(ScheduledMessage.booking_id))
    .outerjoin(Patient, col(Patient.id) == col(ScheduledMessage.patient_id))
    .where(col(ScheduledMessage.id).in_(bindparam("message_ids", expanding=True)))
    .execution_options(populate_existing=True)
)


def load_parties(session: Session, message_id: int) -> Parties | None:
    """The row and its clinic, booking and patient, refreshed from the database; None for no such row."""
    found = load_many_parties(session, [message_id])
    return found.get(message_id)


def load_many_parties(session: Session, message_ids: Sequence[int]) -> dict[int, Parties]:
    """``load_parties`` for several rows in one round trip, by row id (rows that do not exist are absent)."""
    found = session.execute(_ROW_WITH_PARTIES, {"message_ids": list(message_ids)})
    return {
        row.id: Parties(row=row, clinic=clinic, booking=booking, patient=patient)
        for row, clinic, booking, patient in found
        if row.id is not None
    }
