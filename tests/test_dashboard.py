"""The staff dashboard through HTTP as a browser uses it: login with a rate limit, CSRF on every form, the
escalation queue, acknowledge, the inbox and its replies through the outbox, a patient's timeline, and one
clinic never seeing another's."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.channels import build_channels
from service.clinics import add_staff
from service.core.enums import EscalationStatus, InboxState, MessageKind
from service.models import Escalation, Media, Message, ScheduledMessage
from service.settings import get_settings
from tests.conftest import book_through_api
from tests.test_inbound_sms import PATIENT, post_sms, sms_form
from tests.test_paging import tick

PASSWORD = "correct horse battery"
_sid = iter(range(10**6))


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def log_in(client: Any, email: str, password: str = PASSWORD) -> Any:
    form = client.get("/dashboard/login")
    return client.post(
        "/dashboard/login",
        data={"email": email, "password": password, "csrf_token": csrf(form.text), "next": "/dashboard"},
        follow_redirects=False,
    )


@pytest.fixture
def staffed(session: Any, make_clinic: Any, clock: Any, providers: Any, api: Any) -> Any:
    clinic, key = make_clinic()
    nurse = add_staff(
        session, clinic=clinic, name="Nia Nurse", phone="+12125550111", email="nia@glow.example", level=1,
        now=clock.now, password=PASSWORD,
    )  # fmt: skip
    session.commit()
    book_through_api(api, key, starts_at=clock.now - timedelta(days=3))
    return clinic, key, nurse


def text(api: Any, body: str, **extra: str) -> Any:
    return post_sms(api, sms_form(body, sid=f"SM{next(_sid):032d}", **extra))


def test_a_staff_member_logs_in_and_sees_the_queue_of_their_clinic(api, staffed, session, clock):
    assert api.get("/dashboard", follow_redirects=False).headers["location"].startswith("/dashboard/login")
    response = log_in(api, "NIA@glow.example")
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert (
        "aftercare_session=" in cookie and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    )
    text(api, "pus and fever")
    queue = api.get("/dashboard")
    assert queue.status_code == 200 and "Ana Lopez" in queue.text and "urgent" in queue.text
    assert 'hx-get="/dashboard/queue"' in queue.text and "every 10s" in queue.text
    assert queue.headers["cache-control"] == "no-store"


def test_a_wrong_password_is_refused_and_logins_are_rate_limited(api, staffed, session):
    for _ in range(5):
        assert log_in(api, "nia@glow.example", "wrong password!").status_code == 401
    limited = log_in(api, "nia@glow.example")  # even the right password, for the rest of the window
    assert limited.status_code == 429 and "Too many failed logins" in limited.text


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    api, staffed, session, clock, providers
):
    log_in(api, "nia@glow.example")
    text(api, "pus and fever")
    found = session.scalars(select(Escalation)).one()
    refused = api.post(f"/dashboard/escalations/{found.id}/ack", data={}, follow_redirects=False)
    assert refused.status_code == 403
    session.expire_all()
    assert session.get(Escalation, found.id).status == EscalationStatus.OPEN  # type: ignore[union-attr]


def test_acknowledging_from_the_dashboard_stops_paging_and_records_who(
    api, staffed, session, clock, providers
):
    _, _, nurse = staffed
    log_in(api, "nia@glow.example")
    text(api, "pus and fever")
    found = session.scalars(select(Escalation)).one()
    token = csrf(api.get("/dashboard").text)
    fragment = api.post(
        f"/dashboard/escalations/{found.id}/ack", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert (
        fragment.status_code == 200
        and 'id="queue"' in fragment.text
        and "Acknowledged by Nia Nurse" in fragment.text
    )
    session.expire_all()
    acked = session.get(Escalation, found.id)
    assert acked.status == EscalationStatus.ACKNOWLEDGED and acked.acknowledged_by_id == nurse.id  # type: ignore[union-attr]
    assert acked.acknowledged_via == "dashboard"  # type: ignore[union-attr]


def test_another_clinics_escalation_and_patient_are_a_404(api, staffed, session, make_clinic, clock):
    other, _ = make_clinic(name="Other", sms_from="+12125550198", email_from="o@other.example")
    add_staff(session, clinic=other, name="Otto", phone="+12125550177", email="otto@other.example", level=1,
              now=clock.now, password=PASSWORD)  # fmt: skip
    session.commit()
    text(api, "pus and fever")
    found = session.scalars(select(Escalation)).one()
    log_in(api, "otto@other.example")
    assert api.get(f"/dashboard/escalations/{found.id}").status_code == 404
    assert api.get(f"/dashboard/patients/{found.patient_id}").status_code == 404
    assert "Ana" not in api.get("/dashboard").text


def test_a_routine_question_waits_in_the_inbox_and_the_answer_goes_through_the_outbox(
    api, staffed, session, clock, providers
):
    twilio, _ = providers
    log_in(api, "nia@glow.example")
    text(api, "can I go to the gym next week? I have a wedding on saturday")
    inbox = api.get("/dashboard/inbox")
    assert "can I go to the gym" in inbox.text and "Reply by" in inbox.text
    [message] = session.scalars(select(Message).where(Message.inbox_state == InboxState.NEEDS_REPLY)).all()
    sent = api.post(
        f"/dashboard/inbox/{message.id}/reply",
        data={"csrf_token": csrf(inbox.text), "text": "Light exercise is fine from day 3; see you Saturday!"},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    [row] = session.scalars(
        select(ScheduledMessage).where(ScheduledMessage.kind == MessageKind.STAFF_REPLY)
    ).all()
    tick(session, clock, build_channels(get_settings()))
    assert any("Light exercise is fine" in m["body"] and m["to"] == PATIENT for m in twilio.messages)
    session.expire_all()
    assert session.get(Message, message.id).inbox_state == InboxState.REPLIED  # type: ignore[union-attr]
    assert "staff answer by sms" in api.get(f"/dashboard/patients/{row.patient_id}").text


def test_an_inbox_message_is_flagged_after_the_clinics_reply_by_time(api, staffed, session, clock):
    log_in(api, "nia@glow.example")
    text(api, "hi, is it normal to be a bit flaky?")
    assert "— overdue" not in api.get("/dashboard/inbox").text
    clock.advance(minutes=241)
    assert "— overdue" in api.get("/dashboard/inbox").text


def test_the_patient_timeline_shows_messages_out_and_in_with_findings_and_photos(
    api, staffed, session, clock
):
    log_in(api, "nia@glow.example")
    text(
        api,
        "look, yellow crust on my cheek",
        NumMedia="1",
        MediaUrl0="https://api.twilio.com/m/1",
        MediaContentType0="image/jpeg",
    )
    message = session.scalars(select(Message)).one()
    session.add(
        Media(
            clinic_id=message.clinic_id,
            message_id=message.id,
            content_type="image/jpeg",
            size=4,
            data=b"\xff\xd8\xff\xd9",
            fetched_at=clock.now,
        )
    )
    session.commit()
    page = api.get(f"/dashboard/patients/{message.patient_id}")
    assert "yellow crust" in page.text and "Triage:" in page.text and "/dashboard/media/" in page.text
    assert "escalation" in page.text and "day1_checkin by sms" in page.text
    media_id = re.search(r"/dashboard/media/(\d+)", page.text).group(1)  # type: ignore[union-attr]
    photo = api.get(f"/dashboard/media/{media_id}")
    assert photo.status_code == 200 and photo.content == b"\xff\xd8\xff\xd9"
    assert photo.headers["x-content-type-options"] == "nosniff"


def test_upcoming_bookings_and_a_care_plan_preview(api, staffed, session, clock):
    log_in(api, "nia@glow.example")
    assert "Upcoming bookings" in api.get("/dashboard/bookings").text
    preview = api.get(
        "/dashboard/care-plan", params={"treatment": "microneedling", "date": "2026-03-10T19:30"}
    )
    assert preview.status_code == 200 and "day3_warning" in preview.text and "post_immediate" in preview.text


def test_logout_ends_the_session(api, staffed):
    log_in(api, "nia@glow.example")
    page = api.get("/dashboard")
    assert (
        api.post(
            "/dashboard/logout", data={"csrf_token": csrf(page.text)}, follow_redirects=False
        ).status_code
        == 303
    )
    assert api.get("/dashboard", follow_redirects=False).status_code == 303
