"""What the watchdog measures: read-only questions whose answers are the current problems."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlmodel import Session, col

from service.core.enums import (
    Channel,
    EscalationStatus,
    InboundState,
    InboxState,
    MessageStatus,
    SendFailure,
    StepStatus,
)
from service.models import Escalation, EscalationStep, Message, ScheduledMessage, UnroutedMessage
from service.monitoring import heartbeat
from service.settings import Settings

SM = ScheduledMessage
# Told to the operator alone (ALERT_EMAIL): no clinic's staff can act on a message that is no clinic's.
UNROUTED = "unrouted_inbound"
OPERATOR_ONLY = frozenset({UNROUTED})


@dataclass(frozen=True)
class Problem:
    kind: str  # one active alarm per kind
    reason: str  # what is wrong and what to check; no personal details
    about_email: bool = False  # email itself is failing: tell people by SMS too


def problems(
    session: Session, *, now: datetime, settings: Settings, watching_since: datetime
) -> list[Problem]:
    found: list[Problem] = []
    silent = timedelta(seconds=settings.ALARM_DISPATCHER_SILENT_SECONDS)
    last = heartbeat.last(session, heartbeat.DISPATCHER)
    if (last is None and now - watching_since > silent) or (last is not None and now - last > silent):
        since = f"since {last:%H:%M:%S} UTC" if last else "since the watchdog started"
        found.append(
            Problem(
                "dispatcher_silent",
                f"the dispatcher has not run {since}: check that beat and at least one worker are running",
            )
        )
    late = now - timedelta(seconds=settings.ALARM_OVERDUE_SECONDS)
    overdue = session.execute(
        select(col(SM.channel), func.count())
        .where(
            or_(
                (col(SM.status) == MessageStatus.SCHEDULED) & (col(SM.send_at) < late),
                (col(SM.status) == MessageStatus.QUEUED) & (col(SM.claimed_at) < late),
            )
        )
        .group_by(col(SM.channel))
    ).all()
    if overdue:
        total = sum(count for _, count in overdue)
        channels = {str(channel) for channel, _ in overdue}
        found.append(
            Problem(
                "messages_overdue",
                f"{total} due message(s) unsent for over {settings.ALARM_OVERDUE_SECONDS:.0f} s "
                f"({', '.join(sorted(channels))}): check the workers and the broker",
                about_email=channels == {Channel.EMAIL.value},
            )
        )
    window = now - timedelta(seconds=settings.ALARM_FAILURE_WINDOW_SECONDS)
    failing = session.execute(
        select(col(SM.channel), func.count())
        .where(
            col(SM.updated_at) > window,
            or_(
                col(SM.status).in_([MessageStatus.FAILED, MessageStatus.UNDELIVERED]),
                (col(SM.status) == MessageStatus.SCHEDULED)
                & (col(SM.attempts) > 0)
                & col(SM.last_error).is_not(None),
                col(SM.status) == MessageStatus.UNKNOWN,
            ),
        )
        .group_by(col(SM.channel))
    ).all()
    failures = sum(count for _, count in failing)
    if failures >= settings.ALARM_FAILURES:
        channels = {str(channel) for channel, _ in failing}
        found.append(
            Problem(
                "delivery_failures",
                f"{failures} send(s) failed or are retrying in the last "
                f"{settings.ALARM_FAILURE_WINDOW_SECONDS / 60:.0f} min ({', '.join(sorted(channels))}): "
                "check the provider's status and the credentials",
                about_email=channels == {Channel.EMAIL.value},
            )
        )
    # Rows our own side could not send (a template that does not render, our code crashing on them): a
    # person must fix something, so the first one is enough. Template names only, never what a row says.
    unsendable = session.execute(
        select(col(SM.error_code), col(SM.template), func.count())
        .where(
            col(SM.status) == MessageStatus.FAILED,
            col(SM.error_code).in_([failure.value for failure in SendFailure]),
            col(SM.updated_at) > window,
        )
        .group_by(col(SM.error_code), col(SM.template))
        .order_by(col(SM.error_code), col(SM.template))
    ).all()
    if unsendable:
        what = [
            f"template {template!r} does not render ({count})"
            if code == SendFailure.TEMPLATE
            else f"our send code crashed on {template!r} ({count})"
            for code, template, count in unsendable
        ]
        found.append(
            Problem(
                "messages_unsendable",
                f"{sum(count for _, _, count in unsendable)} message(s) failed on our side, not the "
                f"provider's: {'; '.join(what)}. GET /api/v1/messages?status=failed gives each reason; fix "
                "the template or the care plan and restart the service",
            )
        )
    step_late = now - timedelta(seconds=settings.ALARM_STEP_OVERDUE_SECONDS)
    steps = session.scalar(
        select(func.count())
        .select_from(EscalationStep)
        .join(Escalation, col(Escalation.active_step_id) == EscalationStep.id)
        .where(
            col(Escalation.status) == EscalationStatus.OPEN,
            col(EscalationStep.status).in_([StepStatus.PENDING, StepStatus.CLAIMED]),
            col(EscalationStep.due_at) < step_late,
        )
    )
    if steps:
        found.append(
            Problem(
                "escalation_overdue",
                f"{steps} escalation step(s) overdue: staff are not being paged; check beat and the workers",
            )
        )
    found.extend(_inbound_problems(session, now=now, settings=settings))
    unrouted = session.execute(
        select(col(UnroutedMessage.recipient), func.count())
        .where(col(UnroutedMessage.received_at) > now - timedelta(days=1))
        .group_by(col(UnroutedMessage.recipient))
        .order_by(col(UnroutedMessage.recipient))
    ).all()
    if unrouted:
        # Our numbers and addresses, never the senders (those are a patient's details).
        where = ", ".join(f"{recipient} ({count})" for recipient, count in unrouted[:10])
        found.append(
            Problem(
                UNROUTED,
                f"messages in the last 24 h went to numbers or addresses no clinic has: {where}. Give "
                "the number to its clinic (`aftercare clinic update --clinic ID --sms-from …`) or stop "
                "pointing it at this service; `aftercare unrouted` lists them",
            )
        )
    return found


def _inbound_problems(session: Session, *, now: datetime, settings: Settings) -> list[Problem]:
    """What patients sent that is not being understood: messages the inbound worker gave up on (until a
    person answers or dismisses them in the inbox), and messages waiting unprocessed for too long."""
    found = []
    failed = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(col(Message.state) == InboundState.FAILED, col(Message.inbox_state) == InboxState.NEEDS_REPLY)
    )
    if failed:
        found.append(
            Problem(
                "inbound_not_processed",
                f"{failed} message(s) from patients could not be processed: read them in the dashboard's "
                "inbox, where they wait with their text; the inbound worker's log names the error",
            )
        )
    late = now - timedelta(seconds=settings.ALARM_OVERDUE_SECONDS)
    waiting = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(col(Message.state) == InboundState.RECEIVED, col(Message.received_at) < late)
    )
    if waiting:
        found.append(
            Problem(
                "inbound_waiting",
                f"{waiting} message(s) from patients unprocessed for over "
                f"{settings.ALARM_OVERDUE_SECONDS:.0f} s: check that the inbound worker "
                "(celery worker --queues inbound) and beat are running",
            )
        )
    return found
