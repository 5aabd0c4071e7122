"""The crash-loop guard at the send boundary: a row our own side cannot send fails at once with a reason staff
can see and an alarm of its own; any other exception is counted, tried again a few times and then fails;
a page that cannot be sent moves paging on; one bad row never stops the rest of its batch. In-process,
with the real Twilio client against the fake Twilio and a real SMTP server, on the test's clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from service import db
from service.channels.base import OutgoingMessage, ProviderReceipt
from service.core.enums import Channel, EscalationStatus, MessageKind, MessageStatus, SendFailure
from service.models import Alarm, ScheduledMessage, StaffMember
from service.outbox.dispatch import dispatch
from service.paging import steps
from service.sending.send import Outcome, send_batch_guarded, send_guarded
from service.settings import get_settings
from service.wiring import purposes
from tests import test_paging, test_sending
from tests.test_paging import DOCTOR, NURSE, escalation, pages_to, text, tick
from tests.test_sending import book, rows, run_dispatcher
from tests.test_watchdog import watch

# The fixtures these tests share with the paging and sending tests.
channels = test_sending.channels
late_booking = test_sending.late_booking
clinic_with_staff = test_paging.clinic_with_staff
booked = test_paging.booked

S = MessageStatus


def set_template(message_id: int, template: str) -> None:
    """Arrange the scene: the row names a template that is not there (a plan edited after booking)."""
    with Session(db.get_engine()) as other:
        other.execute(
            update(ScheduledMessage).where(ScheduledMessage.id == message_id).values(template=template)
        )
        other.commit()


def unsendable_alarms(session: Session) -> list[Alarm]:
    session.expire_all()
    return list(session.scalars(select(Alarm).where(Alarm.kind == "messages_unsendable")))


def test_a_message_whose_template_is_missing_fails_at_once_with_its_reason_and_an_alarm(
    api, session, make_clinic, clock, channels, providers
):
    twilio, smtp = providers
    clinic, key = make_clinic()
    book(session, clinic, clock, starts_at=(clock.now - timedelta(minutes=150)).isoformat())
    [sms] = rows(session, step="post_immediate", channel="sms")
    set_template(sms.id, "post_immediate_renamed")
    since = clock.now
    outcomes = run_dispatcher(session, clock, channels)
    assert outcomes[sms.id] == Outcome.FAILED  # at once: not queued again, not handed back by a sweep
    [failed] = rows(session, id=sms.id)
    assert failed.status == S.FAILED and failed.error_code == SendFailure.TEMPLATE
    assert failed.attempts == 0 and twilio.requests == []  # nothing reached the provider
    smtp.wait_for_messages(1)  # the step's email is its own row, and goes

    listed = api.get("/api/v1/messages?status=failed", headers={"Authorization": f"Bearer {key}"}).json()
    assert [m["id"] for m in listed] == [sms.id]
    assert "post_immediate_renamed" in listed[0]["last_error"]
    assert "fix the template or the care plan" in listed[0]["last_error"]

    # The watchdog raises an alarm of its own on this first failure.
    clock.advance(seconds=1)
    changes = watch(session, clock, since)
    [alarm] = unsendable_alarms(session)
    assert "post_immediate_renamed" in alarm.reason and any(c.raised for c in changes)

    # Later passes do not bring it back.
    clock.advance(seconds=get_settings().QUEUED_STALE_SECONDS + 1)
    run_dispatcher(session, clock, channels)
    assert rows(session, id=sms.id)[0].status == S.FAILED and twilio.requests == []


def test_a_page_for_a_staff_member_made_inactive_pages_the_next_level_at_once(
    api, booked, session, clock, channels, providers
):
    twilio, _ = providers
    text(api, "there is pus and I have a fever")  # the nurse's pages are queued
    nurse = session.scalar(select(StaffMember).where(StaffMember.phone == NURSE))
    nurse.active = False  # she left the clinic a moment later
    session.add(nurse)
    session.commit()
    tick(session, clock, channels)
    pages = session.scalars(
        select(ScheduledMessage).where(
            ScheduledMessage.kind == MessageKind.PAGE, ScheduledMessage.staff_member_id == nurse.id
        )
    ).all()
    assert {p.status for p in pages} == {S.SUPPRESSED} and pages_to(twilio, NURSE) == []
    for page in pages:  # the page-failed task, as the worker runs it
        steps.page_failed(session, page.id, now=clock.now)
        session.commit()
    tick(session, clock, channels)
    assert len(pages_to(twilio, DOCTOR)) == 1  # no wait for the acknowledgement timeout
    assert escalation(session).status == EscalationStatus.OPEN


def test_a_page_that_does_not_render_fails_and_pages_the_next_level_at_once(
    api, booked, session, clock, channels, providers
):
    twilio, _ = providers
    text(api, "there is pus and I have a fever")
    queued = session.scalars(
        select(ScheduledMessage.id).where(
            ScheduledMessage.kind == MessageKind.PAGE, ScheduledMessage.channel == Channel.SMS
        )
    ).all()
    for page_id in queued:
        set_template(page_id, "page_v2")
    tick(session, clock, channels)
    [failed] = rows(session, id=queued[0])
    assert failed.status == S.FAILED and failed.error_code == SendFailure.TEMPLATE
    steps.page_failed(session, failed.id, now=clock.now)
    session.commit()
    tick(session, clock, channels)
    assert pages_to(twilio, NURSE) == [] and len(pages_to(twilio, DOCTOR)) == 1


def corrupt_page(session: Session, clinic_id: int, staff_id: int, clock: Any) -> int:
    """A queued page that names no escalation: our page code cannot build it (an AssertionError)."""
    row = ScheduledMessage(
        clinic_id=clinic_id, staff_member_id=staff_id, step="page-corrupt", channel=Channel.SMS,
        template="page", kind=MessageKind.PAGE, send_at=clock.now, status=S.QUEUED, claimed_at=clock.now,
        created_at=clock.now, updated_at=clock.now,
    )  # fmt: skip
    session.add(row)
    session.commit()
    return row.id  # type: ignore[return-value]


def test_an_exception_in_our_send_code_is_counted_tried_again_and_then_fails_the_row(
    session, clinic_with_staff, clock, channels, providers, caplog
):
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    nurse = session.scalar(select(StaffMember).where(StaffMember.phone == NURSE))
    bad = corrupt_page(session, clinic.id, nurse.id, clock)
    settings = get_settings()
    for crash in range(1, settings.MAX_SEND_CRASHES + 1):
        with caplog.at_level("ERROR"):
            assert (
                send_guarded(bad, now=clock.now, channels=channels, purposes=purposes(), settings=settings)
                == Outcome.CRASHED
            )
        [row] = rows(session, id=bad)
        assert row.status == S.SCHEDULED and row.crashes == crash and row.send_at > clock.now
        assert row.last_error.startswith("AssertionError in our send code")
        assert f"message {bad}: AssertionError in the send task" in caplog.text
        clock.now = row.send_at
        dispatch(session, now=clock.now, settings=settings)  # claimed again when its retry is due
        session.commit()
    assert (
        send_guarded(bad, now=clock.now, channels=channels, purposes=purposes(), settings=settings)
        == Outcome.FAILED
    )
    [row] = rows(session, id=bad)
    assert row.status == S.FAILED and row.error_code == SendFailure.CRASHED
    assert f"{settings.MAX_SEND_CRASHES} times" in row.last_error
    assert twilio.requests == [] and NURSE not in caplog.text


def test_one_bad_row_does_not_stop_the_rest_of_its_batch(
    session, clinic_with_staff, clock, channels, providers
):
    twilio, smtp = providers
    clinic, _ = clinic_with_staff
    book(session, clinic, clock, starts_at=(clock.now - timedelta(minutes=150)).isoformat())
    nurse = session.scalar(select(StaffMember).where(StaffMember.phone == NURSE))
    run = dispatch(session, now=clock.now, settings=get_settings())
    session.commit()
    bad = corrupt_page(session, clinic.id, nurse.id, clock)
    # What the worker's send_messages task does, at the test's clock (a worker reads the wall clock).
    outcomes = send_batch_guarded(
        [bad, *run.due], now=clock.now, channels=channels, purposes=purposes(), settings=get_settings()
    )
    assert outcomes == [Outcome.CRASHED, Outcome.SENT, Outcome.SENT]
    assert len(twilio.messages) == 1 and len(smtp.wait_for_messages(1)) == 1


class SDKThatFailsAfterSending:
    """A provider SDK with a bug: it sends, then raises something that is not a DeliveryError."""

    def __init__(self, real: Any) -> None:
        self.real, self.name = real, real.name

    def send(self, message: OutgoingMessage) -> ProviderReceipt:
        self.real.send(message)
        raise TypeError("unexpected answer shape")

    def lookup(self, message: OutgoingMessage, *, since: Any) -> ProviderReceipt | None:
        return self.real.lookup(message, since=since)


def test_an_exception_once_the_request_may_have_left_is_settled_with_the_provider_never_resent(
    session, late_booking, clock, channels, providers
):
    twilio, _ = providers
    settings = get_settings()
    buggy = {**channels, Channel.SMS: SDKThatFailsAfterSending(channels[Channel.SMS])}
    run = dispatch(session, now=clock.now, settings=settings)
    session.commit()
    [sms] = rows(session, step="post_immediate", channel="sms")
    assert sms.id in run.due
    assert (
        send_guarded(sms.id, now=clock.now, channels=buggy, purposes=purposes(), settings=settings)
        == Outcome.CRASHED
    )
    [row] = rows(session, id=sms.id)
    assert row.status == S.UNKNOWN and row.crashes == 1
    clock.advance(seconds=settings.UNKNOWN_GRACE_SECONDS + 1)
    run_dispatcher(session, clock, channels)  # the look-up finds it at Twilio
    [row] = rows(session, id=sms.id)
    assert row.status == S.SENT and row.provider_id == twilio.messages[0]["sid"]
    assert len(twilio.messages) == 1
