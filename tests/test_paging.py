"""Paging staff until a person answers: escalations opened by alarming replies, rounds by level, ACK by SMS,
the dashboard's and the API's acknowledge and resolve — in-process, with the real Twilio client against the
fake Twilio server and a real SMTP server, and a clock the test moves instead of sleeping."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from service.channels import build_channels
from service.clinics import add_staff, update_clinic
from service.core.enums import EscalationStatus, MessageKind, MessageStatus, StepStatus
from service.models import Escalation, EscalationStep, Message, ScheduledMessage
from service.outbox.dispatch import dispatch
from service.paging import lifecycle, steps
from service.sending.send import send_due_message
from service.settings import get_settings
from service.wiring import purposes
from tests.conftest import book_through_api
from tests.test_inbound_sms import PATIENT, post_sms, sms_form

S = MessageStatus
NURSE = "+12125550111"
DOCTOR = "+12125550122"
MANAGER = "+12125550133"
_sid = iter(range(10**6))


@pytest.fixture
def channels(providers: Any) -> Any:
    return build_channels(get_settings())


@pytest.fixture
def clinic_with_staff(session: Session, make_clinic: Any, clock: Any, providers: Any) -> Any:
    clinic, key = make_clinic(ack_timeouts={"urgent": 600, "emergency": 120})
    add_staff(
        session,
        clinic=clinic,
        name="Nia Nurse",
        phone=NURSE,
        email="nia@glow.example",
        level=1,
        now=clock.now,
    )
    add_staff(
        session,
        clinic=clinic,
        name="Dan Doctor",
        phone=DOCTOR,
        email="dan@glow.example",
        level=2,
        now=clock.now,
    )
    session.commit()
    return clinic, key


@pytest.fixture
def booked(api: Any, clinic_with_staff: Any, clock: Any) -> dict[str, Any]:
    _, key = clinic_with_staff
    return book_through_api(api, key, starts_at=clock.now - timedelta(days=3, hours=2))


def text(api: Any, body: str, sender: str = PATIENT) -> Any:
    response = post_sms(api, sms_form(body, sid=f"SM{next(_sid):032d}", sender=sender))
    assert response.status_code == 200, response.text
    return response


def tick(session: Session, clock: Any, channels: Any) -> None:
    """What beat and the workers would do now: claim due rows and steps, run them, send what is queued."""
    settings = get_settings()
    for _ in range(4):
        dispatch(session, now=clock.now, settings=settings)
        for step_id in lifecycle.claim_due_steps(session, now=clock.now, limit=100):
            steps.run_step(session, step_id, now=clock.now)
        session.commit()
        queued = session.scalars(select(ScheduledMessage.id).where(ScheduledMessage.status == S.QUEUED)).all()
        if not queued:
            return
        for message_id in queued:
            send_due_message(
                session, message_id, now=clock.now, channels=channels, purposes=purposes(), settings=settings
            )


def pages_to(twilio: Any, phone: str) -> list[dict[str, Any]]:
    return [m for m in twilio.messages if m["to"] == phone]


def escalation(session: Session) -> Escalation:
    session.expire_all()
    [found] = session.scalars(select(Escalation)).all()
    return found


def test_an_urgent_reply_pages_level_one_then_level_two_until_an_ack_by_sms(
    api, booked, session, clock, channels, providers
):
    twilio, smtp = providers
    text(api, "there's pus coming out and I have a fever")
    tick(session, clock, channels)
    opened = escalation(session)
    assert opened.status == EscalationStatus.OPEN and opened.severity == "urgent"
    [page] = pages_to(twilio, NURSE)
    assert f"ACK {opened.ack_code}" in page["body"] and "AL" in page["body"] and "urgent" in page["body"]
    assert (
        "pus" not in page["body"].lower()
        and "fever" not in page["body"].lower()
        and "Ana" not in page["body"]
    )
    assert f"/dashboard/escalations/{opened.id}" in page["body"]
    [email] = [m for m in smtp.messages if m["To"] == "nia@glow.example"]
    assert "pus" in email.get_body(("plain",)).get_content()
    assert pages_to(twilio, DOCTOR) == []

    clock.advance(seconds=599)
    tick(session, clock, channels)
    assert pages_to(twilio, DOCTOR) == []  # not yet: the timeout is 600 s
    clock.advance(seconds=2)
    tick(session, clock, channels)
    assert len(pages_to(twilio, DOCTOR)) == 1 and len(pages_to(twilio, NURSE)) == 1

    answer = text(api, f"ack {opened.ack_code}", sender=DOCTOR)
    assert "acknowledged" in answer.text.lower()
    tick(session, clock, channels)
    acked = escalation(session)
    assert acked.status == EscalationStatus.ACKNOWLEDGED and acked.acknowledged_via == "sms"
    assert acked.acknowledged_by_id is not None and acked.acknowledged_at == clock.now
    # The patient is told a clinician has the message.
    told = [m for m in twilio.messages if m["to"] == PATIENT]
    assert told and "a clinician has your message" in told[-1]["body"]
    # Paging has stopped: after any number of timeouts nobody else is paged.
    before = len(twilio.messages)
    for _ in range(3):
        clock.advance(seconds=601)
        tick(session, clock, channels)
    assert len(twilio.messages) == before
    # Nothing from a staff phone is triaged as a patient's message.
    staff_message = session.scalars(select(Message).where(Message.sender == DOCTOR)).one()
    assert staff_message.staff_member_id is not None and staff_message.findings == []


def test_after_the_last_level_the_last_level_is_paged_again(api, booked, session, clock, channels, providers):
    twilio, _ = providers
    text(api, "my face has yellow pus")
    tick(session, clock, channels)
    for _ in range(3):
        clock.advance(seconds=601)
        tick(session, clock, channels)
    assert len(pages_to(twilio, NURSE)) == 1
    assert len(pages_to(twilio, DOCTOR)) == 3  # level 2, then level 2 again, and again


def test_an_emergency_pages_every_level_after_the_first_timeout(
    api, booked, session, clock, channels, providers
):
    twilio, _ = providers
    text(api, "my throat is closing and my lips are swelling")
    tick(session, clock, channels)
    assert escalation(session).severity == "emergency"
    assert len(pages_to(twilio, NURSE)) == 1 and pages_to(twilio, DOCTOR) == []
    clock.advance(seconds=121)
    tick(session, clock, channels)
    assert len(pages_to(twilio, NURSE)) == 2 and len(pages_to(twilio, DOCTOR)) == 1


def test_a_rise_in_severity_pages_the_current_level_again_at_once_and_restarts_its_timer(
    api, booked, session, clock, channels, providers
):
    twilio, _ = providers
    text(api, "the redness is spreading and it has pus")
    tick(session, clock, channels)
    clock.advance(seconds=300)
    text(api, "now I feel faint and confused with a high fever")
    tick(session, clock, channels)
    assert escalation(session).severity == "emergency"
    assert len(pages_to(twilio, NURSE)) == 2 and pages_to(twilio, DOCTOR) == []
    assert len(session.scalars(select(Escalation)).all()) == 1  # the second message joined the first
    clock.advance(seconds=121)  # the emergency timeout now, from the re-page
    tick(session, clock, channels)
    assert len(pages_to(twilio, DOCTOR)) == 1


def test_a_page_that_fails_for_good_moves_to_the_next_level_at_once(
    api, booked, session, clock, channels, providers
):
    twilio, _ = providers
    twilio.error_for_number(NURSE, code=21610)  # the nurse's phone replied STOP to the clinic's number
    text(api, "pus and fever")
    tick(session, clock, channels)
    # The page task for the failure runs as the worker would run it.
    [failed] = session.scalars(
        select(ScheduledMessage).where(
            ScheduledMessage.kind == MessageKind.PAGE, ScheduledMessage.status == S.FAILED
        )
    ).all()
    steps.page_failed(session, failed.id, now=clock.now)
    session.commit()
    tick(session, clock, channels)
    assert len(pages_to(twilio, DOCTOR)) == 1  # no 600 s wait
    assert escalation(session).status == EscalationStatus.OPEN


def test_unknown_and_stale_ack_codes_get_a_helpful_answer(api, booked, session, clock, channels, providers):
    text(api, "pus and fever")
    tick(session, clock, channels)
    code = escalation(session).ack_code
    assert "not a code from a page of yours" in text(api, "ACK 9999", sender=NURSE).text.lower()
    help_text = text(api, "what is this", sender=NURSE).text
    assert "ACK and the code" in help_text and code not in help_text  # the help names no open code
    assert "acknowledged" in text(api, f"Ack #{code}", sender=NURSE).text.lower()
    stale = text(api, f"ACK {code}", sender=DOCTOR).text
    assert "already acknowledged by Nia Nurse" in stale


def test_an_ack_is_accepted_only_from_the_clinics_own_staff_phones(
    api, booked, session, make_clinic, clock, channels, providers
):
    other, _ = make_clinic(name="Other Clinic", sms_from="+12125550199", email_from="x@other.example")
    add_staff(
        session, clinic=other, name="Otto", phone=MANAGER, email="o@other.example", level=1, now=clock.now
    )
    session.commit()
    text(api, "pus and fever")
    tick(session, clock, channels)
    code = escalation(session).ack_code
    text(api, f"ACK {code}", sender=MANAGER)  # a stranger to this clinic: read as an unknown sender
    assert escalation(session).status == EscalationStatus.OPEN


def test_a_running_escalation_keeps_the_policy_it_started_with(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    twilio, _ = providers
    clinic, _ = clinic_with_staff
    text(api, "pus and fever")
    tick(session, clock, channels)
    update_clinic(session, clinic, now=clock.now, ack_timeouts={"urgent": 60})
    add_staff(
        session,
        clinic=clinic,
        name="New Level One",
        phone=MANAGER,
        email="n@glow.example",
        level=1,
        now=clock.now,
    )
    session.commit()
    clock.advance(seconds=120)
    tick(session, clock, channels)
    assert (
        pages_to(twilio, DOCTOR) == [] and pages_to(twilio, MANAGER) == []
    )  # still the 600 s of the snapshot


def test_the_api_acknowledges_and_resolves_with_a_note(
    api, booked, clinic_with_staff, session, clock, channels
):
    _, key = clinic_with_staff
    headers = {"Authorization": f"Bearer {key}"}
    text(api, "pus and fever")
    tick(session, clock, channels)
    [listed] = api.get("/api/v1/escalations?status=open", headers=headers).json()
    assert listed["severity"] == "urgent" and listed["level"] == 1 and len(listed["messages"]) == 1
    acked = api.post(f"/api/v1/escalations/{listed['id']}/ack", headers=headers)
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    assert api.post(f"/api/v1/escalations/{listed['id']}/ack", headers=headers).status_code == 409
    resolved = api.post(
        f"/api/v1/escalations/{listed['id']}/resolve", json={"note": "called, antibiotics"}, headers=headers
    )
    assert resolved.status_code == 200 and resolved.json()["resolution_note"] == "called, antibiotics"
    assert api.get("/api/v1/escalations?status=open", headers=headers).json() == []
    steps_left = session.scalars(
        select(EscalationStep).where(EscalationStep.status == StepStatus.PENDING)
    ).all()
    assert steps_left == []


def test_another_clinics_escalation_is_a_404(api, booked, make_clinic, session, clock, channels):
    text(api, "pus and fever")
    tick(session, clock, channels)
    _, other_key = make_clinic(name="Other", sms_from="+12125550198", email_from="y@other.example")
    found = escalation(session)
    response = api.post(
        f"/api/v1/escalations/{found.id}/ack", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert response.status_code == 404


def test_with_no_staff_the_emergency_answer_promises_only_what_is_true(
    api, make_clinic, session, clock, providers
):
    _, key = make_clinic()
    book_through_api(api, key, starts_at=clock.now - timedelta(days=1))
    answer = text(api, "I can't breathe and my tongue is swelling")
    assert "call 911" in answer.text.lower()
    assert "alerted" not in answer.text.lower() and "will see your message" in answer.text
    health = api.get("/healthz").json()
    assert health["clinics_without_staff"] == 1
    found = escalation(session)
    assert (
        found.status == EscalationStatus.OPEN and found.active_step_id is None
    )  # nobody to page, still shown


def test_the_same_alarming_sms_delivered_twice_opens_one_escalation_and_pages_once(
    api, booked, session, clock, channels, providers
):
    twilio, _ = providers
    form = sms_form("pus and fever", sid="SM" + "9" * 32)
    post_sms(api, form)
    post_sms(api, form)
    tick(session, clock, channels)
    assert len(session.scalars(select(Escalation)).all()) == 1
    assert len(pages_to(twilio, NURSE)) == 1


def test_metrics_show_open_escalations_pages_and_the_times_to_page_and_acknowledge(
    api, booked, clinic_with_staff, session, clock, channels
):
    _, key = clinic_with_staff
    text(api, "pus and fever")
    tick(session, clock, channels)
    body = api.get("/metrics").text
    assert 'aftercare_open_escalations{severity="urgent"} 1.0' in body
    assert 'aftercare_pages{channel="sms",outcome="sent"} 1.0' in body
    assert "aftercare_inbound_to_first_page_seconds_count 1.0" in body
    clock.advance(seconds=90)
    found = escalation(session)
    api.post(f"/api/v1/escalations/{found.id}/ack", headers={"Authorization": f"Bearer {key}"})
    body = api.get("/metrics").text
    assert 'aftercare_time_to_acknowledge_seconds_bucket{le="120.0"} 1.0' in body
