"""Answers: ours to a patient's message (routine advice, "a clinician has your message"), and a staff
member's from the dashboard. They go even after an opt-out or a cancel — the patient just wrote to us —
and fall back to the patient's other channel like any message to them."""

from __future__ import annotations

from service.core.enums import MessageKind
from service.patients.messages import PatientMessage


class Answer(PatientMessage):
    """Our automatic answer to a patient's message."""

    def __init__(self) -> None:
        super().__init__(MessageKind.REPLY)


class StaffAnswer(PatientMessage):
    """A staff member's answer: to the patient, or to the address a stranger wrote from
    (``to_address``), which has no other channel to fall back to."""

    def __init__(self) -> None:
        super().__init__(MessageKind.STAFF_REPLY)
