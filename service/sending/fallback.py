"""What a permanent delivery failure means for the patient, and the message that stands in for it.

An infection warning that cannot go by SMS must still reach the patient: it goes by email instead (and an
email that bounces goes by SMS), once per step.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from service.core.enums import Channel, RecipientProblem
from service.models import Patient, ScheduledMessage
from service.outbox import lifecycle
from service.patients.consent import record_recipient_problem
from service.patients.reach import contact_problem


def fall_back(
    session: Session,
    row: ScheduledMessage,
    patient: Patient,
    *,
    problem: RecipientProblem | None,
    now: datetime,
) -> ScheduledMessage | None:
    """Record what the failure says about the patient, then queue the same step on the other channel when
    the patient can be reached there. Returns the new row, if any."""
    if problem is not None:
        record_recipient_problem(session, patient, Channel(row.channel), problem, now=now)
    if contact_problem(patient, Channel(row.channel).other) is not None:
        return None
    return lifecycle.add_fallback(session, row, now=now)
