"""Escalation steps: each round of pages runs exactly once, and leaves the next round as the active step.

A step acts only while it is its escalation's active step: acknowledging, resolving, a rise in severity or
a failed page clears or replaces the active id, so a step whose time comes later does nothing (the pattern
Grafana OnCall uses). Whether it still is, is decided by one guarded UPDATE of the escalation
(``lifecycle.run_round``), so two workers, two dispatchers, a task delivered twice, or an acknowledgement
a moment earlier leave it nothing to page; the pages themselves are unique per step, staff member and
channel. Every state change goes through ``service.paging.lifecycle``; this module decides what to page.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from service import audit
from service.celery import SEND_MESSAGE, enqueue_after_commit
from service.core.enums import Channel, EscalationStatus, MessageKind
from service.core.escalation import PAGE_FAILED_REASON, Policy, Round, next_round, round_after_failed_page
from service.models import Escalation, EscalationStep, ScheduledMessage, StaffMember, id_of
from service.outbox import lifecycle as outbox
from service.paging import lifecycle

log = logging.getLogger(__name__)


def add_step(session: Session, escalation: Escalation, planned: Round, *, now: datetime) -> EscalationStep:
    """Start ``planned`` as the escalation's round, right after the event that cleared its active step
    (or opened it), in the same transaction. A round due now runs at once, in the caller's transaction —
    its pages are queued and enqueued when it commits, so they leave within a second; the dispatcher
    would claim it otherwise."""
    step = lifecycle.start_round(session, escalation, planned, now=now)
    if planned.due_at <= now:
        run_step(session, id_of(step), now=now)
    return step


def run_step(session: Session, step_id: int, *, now: datetime) -> str:
    """Page the step's levels, once, and leave the next round as the active step. The caller commits."""
    step = session.get(EscalationStep, step_id, populate_existing=True)
    if step is None:
        return "no_such_step"
    escalation = session.get(Escalation, step.escalation_id, populate_existing=True)
    if escalation is None or escalation.active_step_id != step.id:
        return "not_active"  # a cheap early answer; the guarded UPDATE in run_round is what decides
    policy = Policy.from_snapshot(escalation.policy)
    staff = session.scalars(
        select(StaffMember).where(col(StaffMember.id).in_(policy.staff_at(step.levels)))
    ).all()
    reachable = any(member.phone or member.email for member in staff)
    if not lifecycle.run_round(session, escalation, step, pages_anyone=reachable, now=now):
        # Not due, or since it was read: acknowledged, resolved, raised, or run by another worker.
        return "not_active"
    pages = [
        page
        for member in staff
        for channel in (Channel.SMS, Channel.EMAIL)
        if (
            page := _page(session, escalation, step, member, channel, now=now)
        )
    ]
    for page in pages:
        enqueue_after_commit(session, SEND_MESSAGE, page.id)
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
    escalation = session.get(Escalation, page.escalation_id, populate_existing=True)
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
    expected = active.id if active is not None else None
    if not lifecycle.replace_round(session, escalation, expected_step_id=expected, now=now):
        # Since it was read: acknowledged, resolved, raised, or its waiting round ran or was replaced.
        return "already_moved_on"
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


def _page(
    session: Session,
    escalation: Escalation,
    step: EscalationStep,
    staff: StaffMember,
    channel: Channel,
    *,
    now: datetime,
) -> ScheduledMessage | None:
    """A page of one staff member on one channel for one step, *queued* at once (the caller enqueues it
    after commit). None when the staff member has no address on that channel, or the page already exists
    (the outbox keeps one per step, staff member and channel)."""
    if not (staff.phone if channel == Channel.SMS else staff.email):
        return None
    assert escalation.id is not None and step.id is not None and staff.id is not None
    new = outbox.NewRow(
        kind=MessageKind.PAGE,
        clinic_id=escalation.clinic_id,
        staff_member_id=staff.id,
        escalation_id=escalation.id,
        escalation_step_id=step.id,
        step=f"page-{step.id}",
        channel=channel,
        template="page",
        send_at=now,
    )
    return outbox.queue_now(session, new, now=now, once=True)
