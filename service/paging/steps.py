"""Escalation steps: claimed when due, run exactly once, each leaving the next one as the active step.

A step acts only while it is its escalation's active step: acknowledging or replacing it overwrites the
active id, so a step whose time comes later does nothing (the pattern Grafana OnCall uses). Running a step
is one guarded UPDATE (pending or claimed → paged), so two workers, two dispatchers or a task delivered
twice page once; the pages themselves are unique per step, staff member and channel.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlmodel import Session

from service import audit
from service.celery import SEND_MESSAGE, enqueue_after_commit
from service.core.enums import Channel, EscalationStatus, StepStatus
from service.core.escalation import PAGE_FAILED_REASON, Policy, Round, next_round, round_after_failed_page
from service.db import is_postgres
from service.models import Escalation, EscalationStep, ScheduledMessage, StaffMember
from service.outbox import lifecycle

log = logging.getLogger(__name__)


def add_step(session: Session, escalation: Escalation, planned: Round, *, now: datetime) -> EscalationStep:
    """Make ``planned`` the escalation's active step (any pending one it replaces is superseded). A step
    due now is run at once, in the caller's transaction — its pages are queued and enqueued when it
    commits, so they leave within a second; the dispatcher would claim it otherwise."""
    supersede_pending(session, escalation.id, now=now)  # type: ignore[arg-type]
    number = (
        session.scalar(
            select(EscalationStep.number)
            .where(EscalationStep.escalation_id == escalation.id)
            .order_by(EscalationStep.number.desc())  # type: ignore[attr-defined]
            .limit(1)
        )
        or 0
    ) + 1
    step = EscalationStep(
        escalation_id=escalation.id,  # type: ignore[arg-type]
        number=number,
        levels=list(planned.levels),
        reason=planned.reason,
        due_at=planned.due_at,
        created_at=now,
    )
    session.add(step)
    session.flush()
    escalation.active_step_id = step.id
    escalation.updated_at = now
    session.add(escalation)
    if planned.due_at <= now:
        run_step(session, step.id, now=now)  # type: ignore[arg-type]
    return step


def supersede_pending(session: Session, escalation_id: int, *, now: datetime) -> None:
    session.execute(
        update(EscalationStep)
        .where(
            EscalationStep.escalation_id == escalation_id,
            EscalationStep.status.in_([StepStatus.PENDING, StepStatus.CLAIMED]),  # type: ignore[attr-defined]
        )
        .values(status=StepStatus.SUPERSEDED)
        .execution_options(synchronize_session=False)
    )


def claim_due(session: Session, *, now: datetime, limit: int) -> list[int]:
    """Steps whose time has come and that are still their escalation's active step (pending → claimed)."""
    due = (
        select(EscalationStep.id)
        .join(Escalation, Escalation.active_step_id == EscalationStep.id)
        .where(
            EscalationStep.status == StepStatus.PENDING,
            EscalationStep.due_at <= now,  # type: ignore[operator]
            Escalation.status == EscalationStatus.OPEN,
        )
        .order_by(EscalationStep.due_at)  # type: ignore[arg-type]
        .limit(limit)
    )
    if is_postgres(session):
        due = due.with_for_update(of=EscalationStep, skip_locked=True)  # type: ignore[arg-type]
    result = session.execute(
        update(EscalationStep)
        .where(EscalationStep.id.in_(due.scalar_subquery()), EscalationStep.status == StepStatus.PENDING)  # type: ignore[union-attr]
        .values(status=StepStatus.CLAIMED, claimed_at=now)
        .returning(EscalationStep.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result)


def requeue_lost(session: Session, *, now: datetime, older_than: timedelta) -> int:
    """Claimed steps whose task never ran (a broker restart lost it) go back to pending."""
    lost = select(EscalationStep.id).where(
        EscalationStep.status == StepStatus.CLAIMED,
        EscalationStep.claimed_at < now - older_than,  # type: ignore[operator]
    )
    if is_postgres(session):
        lost = lost.with_for_update(skip_locked=True)  # never wait on a lock a cut-off host still holds
    result = session.execute(
        update(EscalationStep)
        .where(EscalationStep.id.in_(lost.scalar_subquery()), EscalationStep.status == StepStatus.CLAIMED)  # type: ignore[union-attr]
        .values(status=StepStatus.PENDING)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _lock(session: Session, escalation_id: int) -> Escalation | None:
    query = select(Escalation).where(Escalation.id == escalation_id).execution_options(populate_existing=True)
    if is_postgres(session):
        query = query.with_for_update()
    return session.scalar(query)


def run_step(session: Session, step_id: int, *, now: datetime) -> str:
    """Page the step's levels, once, and leave the next round as the active step. The caller commits."""
    step = session.get(EscalationStep, step_id, populate_existing=True)
    if step is None:
        return "no_such_step"
    escalation = _lock(session, step.escalation_id)  # serialises with acknowledge and with another runner
    if (
        escalation is None
        or escalation.status != EscalationStatus.OPEN
        or escalation.active_step_id != step.id
    ):
        return "not_active"
    taken = session.execute(
        update(EscalationStep)
        .where(
            EscalationStep.id == step.id,
            EscalationStep.status.in_([StepStatus.PENDING, StepStatus.CLAIMED]),  # type: ignore[attr-defined]
            EscalationStep.due_at <= now,  # type: ignore[operator]
        )
        .values(status=StepStatus.PAGED, paged_at=now)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return "not_due"
    policy = Policy.from_snapshot(escalation.policy)
    staff = session.scalars(
        select(StaffMember).where(StaffMember.id.in_(policy.staff_at(step.levels)))  # type: ignore[union-attr]
    ).all()
    pages = [
        page
        for member in staff
        for channel in (Channel.SMS, Channel.EMAIL)
        if (
            page := lifecycle.add_page(
                session, escalation=escalation, step=step, staff=member, channel=channel, now=now
            )
        )
    ]
    for page in pages:
        enqueue_after_commit(session, SEND_MESSAGE, page.id)
    if escalation.first_paged_at is None and pages:
        escalation.first_paged_at = now
    following = next_round(policy, escalation.severity, paged=tuple(step.levels), now=now)
    if following is not None:
        add_step(session, escalation, following, now=now)
    audit.record(
        session, escalation.clinic_id, "worker", "escalation.paged", f"escalation:{escalation.id}", now,
        step=step.number, levels=step.levels, pages=len(pages),
    )  # fmt: skip
    log.info(
        "escalation %s step %s paged levels %s (%s pages)",
        escalation.id,
        step.number,
        step.levels,
        len(pages),
    )
    return "paged"


def page_failed(session: Session, page_id: int, *, now: datetime) -> str:
    """A page failed for good: page the next level at once, unless someone acknowledged or a later round
    already replaced the one it belonged to. The caller commits."""
    page = session.get(ScheduledMessage, page_id)
    if page is None or page.escalation_step_id is None or page.escalation_id is None:
        return "not_a_page"
    escalation = _lock(session, page.escalation_id)
    failed_step = session.get(EscalationStep, page.escalation_step_id)
    if escalation is None or failed_step is None or escalation.status != EscalationStatus.OPEN:
        return "not_open"
    active = session.get(EscalationStep, escalation.active_step_id) if escalation.active_step_id else None
    if active is not None and active.number != failed_step.number + 1:
        return "already_moved_on"  # a later round is active: it pages further anyway
    if active is not None and active.reason == PAGE_FAILED_REASON:
        return "already_moved_on"  # another page of the same round failed first
    planned = round_after_failed_page(
        Policy.from_snapshot(escalation.policy), escalation.severity, paged=tuple(failed_step.levels), now=now
    )
    if planned is None:
        return "nobody_to_page"
    add_step(session, escalation, planned, now=now)
    audit.record(
        session,
        escalation.clinic_id,
        "worker",
        "escalation.page_failed",
        f"escalation:{escalation.id}",
        now,
        page=page_id,
    )
    return "moved_on"
