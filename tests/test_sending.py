"""From a due outbox row to the provider: the dispatcher and the send task's use cases, run in-process
against the real Twilio client (talking to a fake Twilio server) and a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from service.api.schemas import BookingIn
from service.channels import build_channels
from service.core.enums import MessageKind
from service.models import MessageStatus, Patient, ScheduledMessage
from service.outbox.dispatch import dispatch
from service.scheduling.bookings import cancel_booking, create_booking
from service.sending.reconcile import reconcile
from service.sending.send import Outcome, send_batch_guarded, send_due_message
from service.settings import get_settings
from service.wiring import purposes
from tests.conftest import booking_body

S = MessageStatus


def book(session: Session, clinic: Any, clock: Any, **overrides: Any) -> Any:
    body = booking_body(**overrides)
    body["patient"]["phone"] = body["patient"].get("phone") and "+12125550147"
    request = BookingIn.model_validate(body)
    booking, _ = create_booking(
        session, clinic, request.to_command(phone=body["patient"]["phone"]), now=clock.now
    )
    session.commit()
    return booking


def run_dispatcher(session: Session, clock: Any, channels: dict[str, Any]) -> dict[int, Outcome]:
    """One beat tick: claim what is due and run each send task once, as a worker would."""
    run = dispatch(session, now=clock.now, settings=get_settings())
    session.commit()
    outcomes = {
        mid: send_due_message(
            session, mid, now=clock.now, channels=channels, purposes=purposes(), settings=get_settings()
        )
        for mid in run.due
    }
    for mid in run.to_reconcile:
        reconcile(session, mid, now=clock.now, channels=channels, purposes=purposes())
    return outcomes


def rows(session: Session, **where: Any) -> list[ScheduledMessage]:
    session.expire_all()
    query = select(ScheduledMessage)
    for name, value in where.items():
        query = query.where(getattr(ScheduledMessage, name) == value)
    return list(session.scalars(query.order_by(ScheduledMessage.id)))


@pytest.fixture
def channels(providers: Any) -> dict[str, Any]:
    return build_channels(get_settings())


@pytest.fixture
def late_booking(session, make_clinic, clock):
    """A booking whose treatment ended 90 minutes ago: its post-treatment messages are due now."""
    clinic, _ = make_clinic()
    starts = clock.now - timedelta(minutes=150)
    return book(session, clinic, clock, starts_at=starts.isoformat())


def test_a_due_sms_goes_once_through_twilio_with_a_status_callback(
    session, late_booking, clock, channels, providers
):
    twilio, smtp = providers
    outcomes = run_dispatcher(session, clock, channels)
    assert sorted(outcomes.values()) == [Outcome.SENT, Outcome.SENT]
    [sms] = twilio.messages
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.SENT and row.provider_id == sms["sid"]
    assert sms["to"] == "+12125550147" and sms["from"] == "+12125550100"
    assert sms["status_callback"] == f"https://aftercare.example/webhooks/twilio/status?message_id={row.id}"
    assert "STOP" in sms["body"]  # the first SMS says how to opt out
    # A duplicate task for the same row does nothing.
    assert (
        send_due_message(
            session, row.id, now=clock.now, channels=channels, purposes=purposes(), settings=get_settings()
        )
        == Outcome.NOT_QUEUED
    )
    assert len(twilio.messages) == 1


def test_the_email_has_text_html_a_stable_message_id_and_one_click_unsubscribe(
    session, late_booking, clock, channels, providers
):
    _, smtp = providers
    run_dispatcher(session, clock, channels)
    [email] = smtp.wait_for_messages(1)
    [row] = rows(session, step="post_immediate", channel="email")
    assert email["To"] == "ana@example.com"
    assert email["Message-ID"] == row.provider_id
    assert "/unsubscribe/" in email["List-Unsubscribe"]
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {part.get_content_type() for part in email.walk()} >= {"text/plain", "text/html"}


def test_only_the_first_sms_carries_the_stop_notice(session, late_booking, clock, channels, providers):
    twilio, _ = providers
    run_dispatcher(session, clock, channels)
    clock.advance(hours=24)
    run_dispatcher(session, clock, channels)
    first, second = twilio.messages
    assert "STOP" in first["body"] and "STOP" not in second["body"]


def test_two_sms_to_one_patient_in_one_task_carry_the_stop_notice_once(
    session, late_booking, clock, channels, providers
):
    """A burst packs rows four to a task; a patient's two SMS due at once (held overnight by quiet hours,
    say) still go one after the other, and only the first says how to opt out."""
    twilio, _ = providers
    clock.advance(hours=24)  # the post-treatment and the day-1 SMS are both due now
    run = dispatch(session, now=clock.now, settings=get_settings())
    session.commit()
    sms = [r.id for r in rows(session, channel="sms") if r.id in run.due]
    assert len(sms) == 2
    outcomes = send_batch_guarded(
        sms, now=clock.now, channels=channels, purposes=purposes(), settings=get_settings()
    )
    assert outcomes == [Outcome.SENT, Outcome.SENT]
    first, second = twilio.messages
    assert "STOP" in first["body"] and "STOP" not in second["body"]


def test_an_opted_out_patient_gets_no_sms_but_still_gets_email(
    session, late_booking, clock, channels, providers
):
    twilio, smtp = providers
    patient = session.get(Patient, late_booking.patient_id)
    patient.sms_opted_out_at = clock.now
    session.add(patient)
    session.commit()
    run_dispatcher(session, clock, channels)
    assert twilio.messages == []
    assert rows(session, step="post_immediate", channel="sms")[0].status == S.SUPPRESSED
    assert len(smtp.wait_for_messages(1)) == 1


def test_a_message_claimed_before_a_cancel_is_suppressed_at_send_time(
    session, late_booking, clock, channels, providers
):
    twilio, _ = providers
    run = dispatch(session, now=clock.now, settings=get_settings())
    session.commit()
    # The booking is cancelled while the send tasks wait in the broker.
    cancel_booking(session, late_booking, now=clock.now)
    session.commit()
    for message_id in run.due:
        send_due_message(
            session,
            message_id,
            now=clock.now,
            channels=channels,
            purposes=purposes(),
            settings=get_settings(),
        )
    assert twilio.messages == []
    assert {r.status for r in rows(session, booking_id=late_booking.id)} <= {
        S.CANCELLED,
        S.SKIPPED,
        S.SUPPRESSED,
    }


def test_an_sms_due_in_quiet_hours_waits_until_eight_in_the_patients_timezone(
    session, make_clinic, clock, channels, providers
):
    twilio, _ = providers
    clinic, _ = make_clinic()
    # The patient lives in Los Angeles; it is 22:30 there (06:30 UTC next day).
    clock.now = datetime(2026, 3, 3, 6, 30, tzinfo=UTC)
    book(
        session,
        clinic,
        clock,
        starts_at=(clock.now - timedelta(minutes=150)).isoformat(),
        patient={"timezone": "America/Los_Angeles"},
    )
    run_dispatcher(session, clock, channels)
    assert twilio.messages == []
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.SCHEDULED
    assert row.send_at == datetime(2026, 3, 3, 16, 0, tzinfo=UTC)  # 08:00 PST
    # Email is not held by quiet hours.
    assert rows(session, step="post_immediate", channel="email")[0].status == S.SENT
    clock.now = row.send_at
    outcomes = run_dispatcher(session, clock, channels)
    assert len(twilio.messages) == 1, (
        outcomes,
        [(r.step, r.channel, r.status, r.last_error) for r in rows(session)],
    )


def test_an_invalid_number_fails_once_marks_the_patient_and_falls_back_to_email(
    session, make_clinic, clock, channels, providers
):
    twilio, smtp = providers
    clinic, _ = make_clinic()
    twilio.error_for_number("+12125550147", status=400, code=21211)
    booking = book(
        session,
        clinic,
        clock,
        starts_at=(clock.now - timedelta(minutes=150)).isoformat(),
        patient={"channels": ["sms"]},
    )
    run_dispatcher(session, clock, channels)
    [sms_row] = rows(session, step="post_immediate", channel="sms")
    assert sms_row.status == S.FAILED and sms_row.error_code == "21211"
    assert "correct" in sms_row.last_error or "not valid" in sms_row.last_error
    patient = session.get(Patient, booking.patient_id)
    session.refresh(patient)
    assert patient.sms_unreachable_reason
    [fallback] = rows(session, step="post_immediate", channel="email")
    assert fallback.fallback_for_id == sms_row.id
    run_dispatcher(session, clock, channels)
    assert len(smtp.wait_for_messages(1)) == 1
    # The next step does not try SMS again: it is suppressed and goes by email.
    clock.advance(hours=24)
    run_dispatcher(session, clock, channels)
    run_dispatcher(session, clock, channels)
    assert rows(session, step="day1_checkin", channel="sms")[0].status == S.SUPPRESSED
    assert rows(session, step="day1_checkin", channel="email")[0].status == S.SENT
    assert len([r for r in twilio.requests if r["method"] == "POST"]) == 1


def test_twilio_21610_marks_the_patient_opted_out(session, make_clinic, clock, channels, providers):
    twilio, _ = providers
    clinic, _ = make_clinic()
    twilio.error_for_number("+12125550147", status=400, code=21610)
    booking = book(session, clinic, clock, starts_at=(clock.now - timedelta(minutes=150)).isoformat())
    run_dispatcher(session, clock, channels)
    patient = session.get(Patient, booking.patient_id)
    session.refresh(patient)
    assert patient.sms_opted_out_at is not None


def test_rate_limited_sends_retry_with_backoff_and_give_up_visibly(
    session, late_booking, clock, channels, providers, monkeypatch
):
    twilio, _ = providers
    monkeypatch.setenv("MAX_SEND_ATTEMPTS", "3")
    from service.settings import reset_settings

    reset_settings()
    twilio.fail_next(10, status=429, code=20429)
    run_dispatcher(session, clock, channels)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.SCHEDULED and row.attempts == 1 and row.send_at > clock.now
    first_wait = row.send_at - clock.now
    clock.now = row.send_at
    run_dispatcher(session, clock, channels)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.attempts == 2 and row.send_at - clock.now > first_wait  # backing off
    clock.now = row.send_at
    run_dispatcher(session, clock, channels)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.FAILED and "gave up after 3 attempts" in row.last_error
    assert twilio.messages == []


def test_a_5xx_that_created_the_message_is_settled_by_lookup_not_resent(
    session, late_booking, clock, channels, providers
):
    twilio, _ = providers
    twilio.fail_next(1, status=500, create=True)
    run_dispatcher(session, clock, channels)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.UNKNOWN
    clock.advance(seconds=get_settings().UNKNOWN_GRACE_SECONDS + 1)
    run_dispatcher(session, clock, channels)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.SENT and row.provider_id == twilio.messages[0]["sid"]
    assert len(twilio.messages) == 1


def test_a_5xx_that_created_nothing_is_sent_again_once(session, late_booking, clock, channels, providers):
    twilio, _ = providers
    twilio.fail_next(1, status=503)
    run_dispatcher(session, clock, channels)
    [row] = rows(session, step="post_immediate", channel="sms")
    # Twilio answered: it is done with the request, so the first look-up is conclusive (no settle window).
    assert row.status == S.UNKNOWN and row.settle_after is None
    clock.advance(seconds=get_settings().UNKNOWN_GRACE_SECONDS + 1)
    run_dispatcher(session, clock, channels)  # look-up finds nothing → rescheduled now
    run_dispatcher(session, clock, channels)  # → sent
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.SENT
    assert len(twilio.messages) == 1


def test_a_timeout_after_the_request_left_is_settled_by_lookup(
    session, late_booking, clock, channels, providers
):
    twilio, _ = providers
    twilio.hang_next(1, seconds=3)
    run_dispatcher(session, clock, channels)
    assert rows(session, step="post_immediate", channel="sms")[0].status == S.UNKNOWN
    clock.advance(seconds=get_settings().UNKNOWN_GRACE_SECONDS + 1)
    run_dispatcher(session, clock, channels)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.SENT
    assert len(twilio.messages) == 1


def test_a_row_left_in_sending_by_a_dead_worker_becomes_unknown_then_settled(
    session, late_booking, clock, channels, providers
):
    twilio, _ = providers
    run = dispatch(session, now=clock.now, settings=get_settings())
    session.commit()
    sms_id = next(r.id for r in rows(session, step="post_immediate", channel="sms"))
    # The worker marked it sending, then died before calling Twilio.
    from service.outbox import lifecycle

    care = purposes()[MessageKind.CARE]
    assert lifecycle.start_sending(session, sms_id, now=clock.now, attempts=1, body="", purpose=care)
    session.commit()
    assert sms_id in run.due
    settings = get_settings()
    clock.advance(seconds=settings.SENDING_STALE_SECONDS + 1)
    # One pass marks it unknown and, its send having begun longer than the grace ago, asks Twilio at once:
    # no such message there → scheduled again, never resent blind.
    assert settings.SENDING_STALE_SECONDS > settings.UNKNOWN_GRACE_SECONDS
    run = dispatch(session, now=clock.now, settings=settings)
    session.commit()
    assert rows(session, id=sms_id)[0].status == S.UNKNOWN and run.to_reconcile == [sms_id]
    # Not found, but the provider could still act on a request it never answered: asked again later.
    assert reconcile(session, sms_id, now=clock.now, channels=channels, purposes=purposes()) == "not_yet"
    assert rows(session, id=sms_id)[0].status == S.UNKNOWN and len(twilio.messages) == 0
    # Once the settle window after the request left has passed, "not found" means it never went.
    clock.advance(seconds=settings.SEND_SETTLE_WINDOW_SECONDS)
    run_dispatcher(session, clock, channels)
    assert rows(session, id=sms_id)[0].status == S.SCHEDULED and len(twilio.messages) == 0
    run_dispatcher(session, clock, channels)
    assert rows(session, id=sms_id)[0].status == S.SENT
    assert len(twilio.messages) == 1


def test_a_slow_provider_that_accepts_after_the_client_gave_up_gets_each_sms_once(
    session, late_booking, clock, channels, providers
):
    """Twilio holds the request past our client's timeout (1 s here) and creates the message afterwards.
    Look-ups before it did find nothing; only once the settle window has passed does "not found" mean
    "not sent". (Resent after the first empty look-up, as before, this SMS went twice.)"""
    twilio, _ = providers
    settings = get_settings()
    twilio.accept_late(3.0)  # every create, until the test ends
    run_dispatcher(session, clock, channels)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.UNKNOWN and row.settle_after == clock.now + timedelta(
        seconds=settings.SEND_SETTLE_WINDOW_SECONDS
    )
    for _ in range(3):  # asked after each grace period: nothing at Twilio yet, and nothing sent again
        clock.advance(seconds=settings.UNKNOWN_GRACE_SECONDS + 1)
        run_dispatcher(session, clock, channels)
    twilio.wait_for_messages(1, timeout=10)  # the held request is acted on at last
    wait_until_twilio_answered_every_request(twilio)
    clock.advance(seconds=settings.SEND_SETTLE_WINDOW_SECONDS)
    run_dispatcher(session, clock, channels)
    run_dispatcher(session, clock, channels)
    wait_until_twilio_answered_every_request(twilio)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.SENT and row.provider_id == twilio.messages[0]["sid"]
    assert [m["to"] for m in twilio.messages] == ["+12125550147"]


def wait_until_twilio_answered_every_request(twilio: Any) -> None:
    from tests.stack import wait_for

    wait_for(
        lambda: all(r["status"] is not None for r in twilio.requests if r["method"] == "POST"),
        timeout=15,
        what="the fake Twilio to act on every request it holds",
    )


def test_a_claimed_row_whose_task_was_lost_is_handed_back(session, late_booking, clock, channels, providers):
    twilio, _ = providers
    dispatch(session, now=clock.now, settings=get_settings())  # claimed; the tasks vanish with the broker
    session.commit()
    assert {r.status for r in rows(session, step="post_immediate")} == {S.QUEUED}
    clock.advance(seconds=get_settings().QUEUED_STALE_SECONDS + 1)
    run_dispatcher(session, clock, channels)
    assert {r.status for r in rows(session, step="post_immediate")} == {S.SENT}
    assert len(twilio.messages) == 1


def test_the_booking_lists_an_evening_sms_at_the_end_of_quiet_hours(session, make_clinic, clock, channels):
    """Quiet hours apply when planning too, so the booking says when each SMS will really go: a 19:30
    treatment's post-treatment SMS (due 22:00 local) is listed at 08:00 the next morning."""
    clinic, _ = make_clinic()
    booking = book(session, clinic, clock, starts_at="2026-03-05T19:30:00-05:00")
    [sms] = rows(session, booking_id=booking.id, step="post_immediate", channel="sms")
    [email] = rows(session, booking_id=booking.id, step="post_immediate", channel="email")
    assert email.send_at == datetime(2026, 3, 6, 3, 0, tzinfo=UTC)  # 22:00 in New York: email may go
    assert sms.send_at == datetime(2026, 3, 6, 13, 0, tzinfo=UTC)  # 08:00 in New York


def test_an_sms_that_meets_quiet_hours_at_send_time_is_deferred_and_logged_without_personal_details(
    session, make_clinic, clock, channels, providers, caplog
):
    twilio, _ = providers
    clinic, _ = make_clinic()
    book(session, clinic, clock, starts_at=(clock.now - timedelta(minutes=150)).isoformat())
    # The clinic widens its quiet hours after the booking was planned: it is 10:00 in New York now.
    clinic.quiet_start, clinic.quiet_end = "09:00", "11:00"
    session.add(clinic)
    session.commit()
    with caplog.at_level("INFO"):
        run_dispatcher(session, clock, channels)
    assert twilio.messages == []
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.SCHEDULED and row.send_at == datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
    assert f"message {row.id} deferred to 11:00 America/New_York (16:00 UTC)" in caplog.text
    assert "+12125550147" not in caplog.text and "Ana" not in caplog.text
