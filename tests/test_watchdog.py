"""The silent-failure alarm: a watchdog that needs neither beat nor the workers notices when messages stop
flowing, tells the clinics' level-1 staff and ALERT_EMAIL directly (by SMS too when email is what fails),
raises each alarm once and clears it when the problem ends; `/healthz/delivery` answers 503 meanwhile."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.channels import build_channels
from service.clinics import add_staff
from service.models import Alarm
from service.monitoring import heartbeat
from service.monitoring.watchdog import look
from service.outbox.dispatch import dispatch
from service.settings import get_settings, reset_settings
from tests.conftest import book_through_api
from tests.test_paging import tick


@pytest.fixture
def watched(session: Any, make_clinic: Any, clock: Any, providers: Any, api: Any, monkeypatch: Any) -> Any:
    monkeypatch.setenv("ALERT_EMAIL", "oncall@aftercare.example")
    reset_settings()
    clinic, key = make_clinic()
    add_staff(
        session,
        clinic=clinic,
        name="Nia Nurse",
        phone="+12125550111",
        email="nia@glow.example",
        level=1,
        now=clock.now,
    )
    session.commit()
    return clinic, key


def watch(session: Any, clock: Any, since: Any) -> list[Any]:
    return look(
        session,
        now=clock.now,
        settings=get_settings(),
        watching_since=since,
        channels=build_channels(get_settings()),
    )


def emails_to(smtp: Any, address: str) -> list[Any]:
    return [m for m in smtp.messages if m["To"] == address]


def test_a_stopped_beat_raises_one_alarm_tells_people_and_clears_when_it_runs_again(
    api, watched, session, clock, providers
):
    _, smtp = providers
    started = clock.now
    heartbeat.beat(session, heartbeat.DISPATCHER, now=clock.now)
    session.commit()
    assert watch(session, clock, started) == []
    clock.advance(seconds=61)  # beat has stopped: the dispatcher has not run for a minute
    [raised] = watch(session, clock, started)
    assert raised.raised and raised.alarm.kind == "dispatcher_silent"
    assert (
        len(emails_to(smtp, "oncall@aftercare.example")) == 1
        and len(emails_to(smtp, "nia@glow.example")) == 1
    )
    assert api.get("/healthz/delivery").status_code == 503
    assert "beat" in api.get("/healthz/delivery").json()["problems"][0]
    assert api.get("/healthz").status_code == 200  # liveness is not this
    assert 'aftercare_alarm_active{kind="dispatcher_silent"} 1.0' in api.get("/metrics").text
    clock.advance(seconds=30)
    assert watch(session, clock, started) == []  # raised once, not every look
    assert len(emails_to(smtp, "oncall@aftercare.example")) == 1
    heartbeat.beat(session, heartbeat.DISPATCHER, now=clock.now)  # beat is back
    session.commit()
    [cleared] = watch(session, clock, started)
    assert not cleared.raised and cleared.alarm.cleared_at == clock.now
    assert len(emails_to(smtp, "oncall@aftercare.example")) == 2
    assert api.get("/healthz/delivery").status_code == 200


def test_stopped_workers_leave_due_messages_unsent_and_raise_an_alarm(
    api, watched, session, clock, providers
):
    _, key = watched
    book_through_api(api, key, starts_at=clock.now - timedelta(minutes=150))
    dispatch(session, now=clock.now, settings=get_settings())  # claimed; no worker takes them
    heartbeat.beat(session, heartbeat.DISPATCHER, now=clock.now)
    session.commit()
    clock.advance(seconds=121)
    heartbeat.beat(session, heartbeat.DISPATCHER, now=clock.now)
    session.commit()
    kinds = {change.alarm.kind for change in watch(session, clock, clock.now)}
    assert kinds == {"messages_overdue"}


def test_a_failing_provider_raises_a_failure_alarm_and_email_failing_is_told_by_sms(
    api, watched, session, clock, providers, monkeypatch
):
    twilio, smtp = providers
    monkeypatch.setenv("ALARM_FAILURES", "3")
    reset_settings()
    _, key = watched
    smtp.fail_next(20, stage="data", code=451)  # the email provider refuses everything for now
    for n in range(4):
        patient = {"phone": f"+1212555{2000 + n:04d}", "email": f"p{n}@example.com", "channels": ["email"]}
        book_through_api(
            api, key, starts_at=clock.now - timedelta(minutes=150), external_id=f"f-{n}", patient=patient
        )
    tick(session, clock, build_channels(get_settings()))
    heartbeat.beat(session, heartbeat.DISPATCHER, now=clock.now)
    session.commit()
    [raised] = watch(session, clock, clock.now)
    assert raised.alarm.kind == "delivery_failures" and raised.about_email
    assert any(m["to"] == "+12125550111" and "Email is failing" in m["body"] for m in twilio.messages)


def test_two_web_processes_watching_raise_the_alarm_once(api, watched, session, clock, providers):
    _, smtp = providers
    started = clock.now
    clock.advance(seconds=61)
    first = watch(session, clock, started)
    second = watch(session, clock, started)
    assert len(first) == 1 and second == []
    assert len(session.scalars(select(Alarm)).all()) == 1


def test_a_reply_that_could_not_be_processed_raises_an_alarm_until_staff_deal_with_it(
    api, watched, session, clock, providers, monkeypatch
):
    """The inbound worker gave up on a message (its triage kept failing): the alarm is raised, the message
    waits in the inbox, and the alarm clears once a person has dealt with it."""
    from service.models import Message, StaffMember
    from service.replies import inbox, pipeline
    from service.triage.loader import load_lexicon
    from tests.test_inbound_sms import PATIENT, post_sms, sms_form

    _, key = watched
    book_through_api(api, key, starts_at=clock.now - timedelta(days=1), patient={"phone": PATIENT})

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broken")

    monkeypatch.setattr(pipeline, "triage", broken)
    post_sms(api, sms_form("my tongue feels thick", sid="SM" + "9" * 32), process=False)
    message = session.scalars(select(Message)).one()
    for _ in range(pipeline.MAX_ATTEMPTS):
        pipeline.process(session, message.id, now=clock.now, lexicon=load_lexicon())
    heartbeat.beat(session, heartbeat.DISPATCHER, now=clock.now)
    session.commit()
    [raised] = watch(session, clock, clock.now)
    assert raised.alarm.kind == "inbound_not_processed" and raised.raised
    assert emails_to(providers[1], "oncall@aftercare.example")
    session.refresh(message)
    nurse = session.scalars(select(StaffMember)).one()
    inbox.dismiss(session, message, staff=nurse, now=clock.now)
    session.commit()
    [cleared] = watch(session, clock, clock.now)
    assert cleared.alarm.kind == "inbound_not_processed" and not cleared.raised
