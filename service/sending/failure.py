"""What follows a row failing for good, wherever the failure is learnt: at send time (our side cannot send
it, or the provider refused it) or later, from a delivery report. One path, so the two cannot disagree: the
row's purpose decides what follows (a page moves paging on, a patient's message tries their other
channel) and the audit log records the same action either way."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from service import audit
from service.core.enums import RecipientProblem
from service.models import ScheduledMessage
from service.outbox.purpose import Purpose


def after_failure(
    session: Session,
    row: ScheduledMessage,
    purpose: Purpose,
    *,
    problem: RecipientProblem | None,
    code: str | None,
    actor: str,
    now: datetime,
) -> None:
    """``actor`` is who told us: "worker" (the send) or "provider" (a delivery report)."""
    purpose.after_failure(session, row, problem=problem, now=now)
    audit.record(
        session, row.clinic_id, actor, "message.failed", f"message:{row.id}", now,
        code=code, channel=row.channel, problem=problem.value if problem else None,
    )  # fmt: skip
