"""Raise each alarm once and clear it when the problem ends; tell people directly through the channels
(the outbox may be what is broken), by email, and by SMS too when the problem is email."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from service.channels.base import Channel, DeliveryError, OutgoingMessage
from service.core.enums import Channel as ChannelName
from service.models import Alarm, Clinic, StaffMember
from service.monitoring.checks import OPERATOR_ONLY, Problem
from service.paging.escalations import clinic_policy
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    alarm: Alarm
    raised: bool  # False: cleared
    about_email: bool


def active(session: Session) -> list[Alarm]:
    return list(
        session.scalars(
            select(Alarm)
            .where(col(Alarm.cleared_at).is_(None))
            .order_by(col(Alarm.id))
            .execution_options(populate_existing=True)
        )
    )


def sync(session: Session, found: list[Problem], *, now: datetime) -> list[Change]:
    """Record what changed since the last look; commits. Only the process that raised (or cleared) an
    alarm gets it back, so people are told once however many web processes watch."""
    current = {alarm.kind: alarm for alarm in active(session)}
    changes: list[Change] = []
    for problem in found:
        if problem.kind in current:
            continue
        alarm = Alarm(kind=problem.kind, reason=problem.reason, raised_at=now)
        try:
            with session.begin_nested():
                session.add(alarm)
        except IntegrityError:
            continue  # another web process raised it a moment ago
        changes.append(Change(alarm, raised=True, about_email=problem.about_email))
    kinds = {problem.kind for problem in found}
    for kind, alarm in current.items():
        if kind not in kinds:
            alarm.cleared_at = now
            session.add(alarm)
            changes.append(Change(alarm, raised=False, about_email=False))
    session.commit()
    return changes


def recipients(session: Session, settings: Settings, kind: str = "") -> tuple[list[str], list[str]]:
    """Email addresses and phones to tell: every clinic's level-1 staff, and ALERT_EMAIL — or ALERT_EMAIL
    alone for what only the operator can fix (``OPERATOR_ONLY``)."""
    emails: list[str] = [settings.ALERT_EMAIL] if settings.ALERT_EMAIL else []
    phones: list[str] = []
    if kind in OPERATOR_ONLY:
        return emails, phones
    for clinic in session.scalars(select(Clinic)).all():
        policy = clinic_policy(session, clinic)
        if policy.empty:
            continue
        for member in session.scalars(
            select(StaffMember).where(col(StaffMember.id).in_(policy.staff_at([policy.levels[0][0]])))
        ).all():
            if member.email and member.email not in emails:
                emails.append(member.email)
            if member.phone and member.phone not in phones:
                phones.append(member.phone)
    return emails, phones


def notify(
    session: Session, change: Change, *, channels: Mapping[ChannelName, Channel], settings: Settings
) -> int:
    """Tell people directly; returns how many sends the providers took."""
    emails, phones = recipients(session, settings, change.alarm.kind)
    alarm = change.alarm
    state = "ALARM" if change.raised else "cleared"
    subject = f"[Aftercare {state}] {alarm.kind.replace('_', ' ')}"
    text = (
        f"{alarm.reason}\n\nRaised at {alarm.raised_at:%Y-%m-%d %H:%M} UTC."
        if change.raised
        else f"The problem has ended: {alarm.reason}\n\nCleared at {alarm.cleared_at:%Y-%m-%d %H:%M} UTC."
    )
    sender_clinic = session.scalars(select(Clinic).order_by(col(Clinic.id))).first()
    told = 0
    for address in emails:
        told += _send(channels[ChannelName.EMAIL], OutgoingMessage(
            outbox_id=0, channel=ChannelName.EMAIL, to=address, sender=settings.EMAIL_FROM,
            body=text, subject=subject, reference=f"alarm-{alarm.id}-{state}",
        ))  # fmt: skip
    if change.about_email and sender_clinic is not None:
        short = f"Aftercare {state}: {alarm.kind.replace('_', ' ')}. Email is failing; check the dashboard."
        for phone in phones:
            told += _send(channels[ChannelName.SMS], OutgoingMessage(
                outbox_id=0, channel=ChannelName.SMS, to=phone, sender=sender_clinic.sms_from, body=short,
            ))  # fmt: skip
    alarm.notified += told
    session.add(alarm)
    session.commit()
    log.warning("alarm %s %s: %s; told %s", alarm.kind, state, alarm.reason, told)
    return told


def _send(channel: Channel, message: OutgoingMessage) -> int:
    try:
        channel.send(message)
        return 1
    except DeliveryError as exc:
        log.error("could not send an alarm by %s: %s", message.channel, type(exc).__name__)
        return 0
