"""The audit trail: who did what to which booking, message or patient, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from service.models import AuditEvent


def record(
    session: Session,
    clinic_id: int | None,
    actor: str,
    action: str,
    subject: str,
    now: datetime,
    **detail: Any,
) -> None:
    """Add an audit row to the current transaction. Detail never carries message bodies or symptoms."""
    session.add(
        AuditEvent(clinic_id=clinic_id, at=now, actor=actor, action=action, subject=subject, detail=detail)
    )
