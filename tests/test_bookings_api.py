"""The booking API as a clinic's booking system uses it (docs/architecture.md#interface)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from service.api.app import create_app
from service.models import Booking, ScheduledMessage
from tests.conftest import booking_body
from tests.stack import at_the_same_moment, serving


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_booking(api: Any, key: str, **overrides: Any) -> Any:
    return api.post("/api/v1/bookings", json=booking_body(**overrides), headers=auth(key))


def test_booking_creates_its_care_plan_schedule(api, make_clinic, session):
    _, key = make_clinic()
    response = post_booking(api, key)
    assert response.status_code == 201, response.text
    document = response.json()
    assert document["status"] == "active"
    steps = {(m["step"], m["channel"]) for m in document["messages"]}
    assert ("pre_24h", "sms") in steps and ("day3_warning", "email") in steps
    assert all(m["status"] == "scheduled" for m in document["messages"])
    # Stored in UTC: 14:00 in New York is 19:00 UTC.
    assert document["starts_at"].startswith("2026-03-05T19:00:00")


def test_phone_in_national_format_is_stored_in_e164(api, make_clinic, session):
    _, key = make_clinic()
    document = post_booking(api, key).json()
    booking = session.get(Booking, document["id"])
    from service.models import Patient

    assert session.get(Patient, booking.patient_id).phone == "+12125550147"


def test_posting_the_same_booking_twice_gives_one_booking_and_one_schedule(api, make_clinic, session):
    _, key = make_clinic()
    first = post_booking(api, key)
    second = post_booking(api, key)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json() == second.json()
    assert session.scalar(select(func.count()).select_from(Booking)) == 1
    assert session.scalar(select(func.count()).select_from(ScheduledMessage)) == len(first.json()["messages"])


def test_a_different_booking_under_the_same_external_id_is_a_conflict(api, make_clinic, session):
    _, key = make_clinic()
    post_booking(api, key)
    response = post_booking(api, key, starts_at="2026-03-06T14:00:00-05:00")
    assert response.status_code == 409
    assert "external_id" in response.json()["detail"]
    assert session.scalar(select(func.count()).select_from(Booking)) == 1


def _error_fields(response: Any) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in response.json()["detail"]]


def test_bad_input_is_a_422_that_names_the_field_and_stores_nothing(api, make_clinic, session):
    _, key = make_clinic()
    cases = {
        ("body", "patient", "phone"): {"patient": {"phone": "12"}},
        ("body", "patient", "email"): {"patient": {"email": "not-an-email"}},
        ("body", "patient", "timezone"): {"patient": {"timezone": "Mars/Olympus"}},
        ("body", "treatment"): {"treatment": "laser"},
        ("body", "starts_at"): {"starts_at": "2026-03-05T14:00:00"},
    }
    for field, overrides in cases.items():
        response = post_booking(api, key, **overrides)
        assert response.status_code == 422, (field, response.text)
        assert any(loc[: len(field)] == field for loc in _error_fields(response)), (field, response.text)
    assert session.scalar(select(func.count()).select_from(Booking)) == 0


def test_requests_without_a_valid_api_key_are_refused(api, make_clinic):
    make_clinic()
    assert api.post("/api/v1/bookings", json=booking_body()).status_code == 401
    assert api.post("/api/v1/bookings", json=booking_body(), headers=auth("nope")).status_code == 401


def test_one_clinic_cannot_see_another_clinics_booking(api, make_clinic):
    _, key_a = make_clinic()
    _, key_b = make_clinic(name="Other", sms_from="+12125550199", email_from="care@other.example")
    booking_id = post_booking(api, key_a).json()["id"]
    assert api.get(f"/api/v1/bookings/{booking_id}", headers=auth(key_b)).status_code == 404
    assert api.post(f"/api/v1/bookings/{booking_id}/cancel", headers=auth(key_b)).status_code == 404


def test_rescheduling_moves_every_unsent_message(api, make_clinic):
    _, key = make_clinic()
    before = post_booking(api, key).json()
    after = api.patch(
        f"/api/v1/bookings/{before['id']}", json={"starts_at": "2026-03-12T14:00:00-04:00"}, headers=auth(key)
    ).json()
    old = {(m["step"], m["channel"]): datetime.fromisoformat(m["send_at"]) for m in before["messages"]}
    new = {(m["step"], m["channel"]): datetime.fromisoformat(m["send_at"]) for m in after["messages"]}
    assert old.keys() == new.keys()
    # A week later, and across the US switch to daylight time: 14:00 local either way is 6 days 23 hours.
    for key_ in old:
        assert (new[key_] - old[key_]).total_seconds() == (7 * 24 - 1) * 3600


def test_cancelling_cancels_every_unsent_message(api, make_clinic):
    _, key = make_clinic()
    booking_id = post_booking(api, key).json()["id"]
    document = api.post(f"/api/v1/bookings/{booking_id}/cancel", headers=auth(key)).json()
    assert document["status"] == "cancelled"
    assert {m["status"] for m in document["messages"]} == {"cancelled"}
    # A cancelled booking cannot be rescheduled.
    response = api.patch(
        f"/api/v1/bookings/{booking_id}", json={"starts_at": "2026-03-12T14:00:00-04:00"}, headers=auth(key)
    )
    assert response.status_code == 409


def test_a_late_booking_skips_past_steps_but_sends_the_post_treatment_message_now(api, make_clinic, clock):
    _, key = make_clinic()
    # Treatment ended 90 minutes ago.
    starts = clock.now.replace(microsecond=0) - timedelta(minutes=150)
    document = post_booking(api, key, starts_at=starts.isoformat()).json()
    by_step = {(m["step"], m["channel"]): m for m in document["messages"]}
    assert by_step[("pre_24h", "sms")]["status"] == "skipped"
    immediate = by_step[("post_immediate", "sms")]
    assert immediate["status"] == "scheduled"
    assert datetime.fromisoformat(immediate["send_at"]) == clock.now
    future = {
        m["step"]
        for m in document["messages"]
        if m["status"] == "scheduled" and m["step"] != "post_immediate"
    }
    assert len(future) >= 6 and "day3_warning" in future


def test_patient_channels_change_adds_and_cancels_unsent_messages(api, make_clinic):
    _, key = make_clinic()
    document = post_booking(api, key, patient={"channels": ["sms"]}).json()
    assert {m["channel"] for m in document["messages"]} == {"sms"}
    response = api.patch(
        f"/api/v1/patients/{document['patient_id']}", json={"channels": ["email"]}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    after = api.get(f"/api/v1/bookings/{document['id']}", headers=auth(key)).json()
    statuses = {(m["channel"], m["status"]) for m in after["messages"]}
    assert ("sms", "cancelled") in statuses and ("email", "scheduled") in statuses


def test_failed_messages_are_listed_for_staff(api, make_clinic, session):
    _, key = make_clinic()
    post_booking(api, key)
    row = session.scalars(select(ScheduledMessage)).first()
    row.status = "failed"
    row.last_error = "the number is a landline"
    session.add(row)
    session.commit()
    listed = api.get("/api/v1/messages?status=failed", headers=auth(key)).json()
    assert [m["id"] for m in listed] == [row.id]
    assert api.get("/api/v1/messages?status=bogus", headers=auth(key)).status_code == 422


def test_health_and_metrics_answer(api):
    assert api.get("/healthz").json() == {"status": "ok", "overdue_messages": 0, "clinics_without_staff": 0}
    assert "aftercare_outbox_overdue_messages 0.0" in api.get("/metrics").text


def test_metrics_count_outbox_rows_by_status_and_channel(api, make_clinic):
    _, key = make_clinic()
    document = post_booking(api, key).json()
    scheduled_sms = sum(
        1 for m in document["messages"] if m["channel"] == "sms" and m["status"] == "scheduled"
    )
    metrics = api.get("/metrics").text
    assert f'aftercare_outbox_messages{{channel="sms",status="scheduled"}} {float(scheduled_sms)}' in metrics


def test_the_same_booking_posted_twice_at_the_same_moment_is_stored_once(use_database, make_clinic, session):
    _, key = make_clinic()
    with serving(create_app()) as base:
        codes = at_the_same_moment(
            4,
            lambda: (
                httpx.post(
                    f"{base}/api/v1/bookings", json=booking_body(), headers=auth(key), timeout=30
                ).status_code
            ),
        )
    assert sorted(codes) == [200, 200, 200, 201]
    assert session.scalar(select(func.count()).select_from(Booking)) == 1


def test_the_migrations_match_the_models(use_database):
    from alembic import command

    from service.migrate import alembic_config

    command.check(alembic_config())  # raises when a model changed without a migration


def test_messages_left_unsent_by_a_stopped_dispatcher_show_in_health(api, make_clinic, clock):
    _, key = make_clinic()
    starts = clock.now - timedelta(minutes=150)
    post_booking(api, key, starts_at=starts.isoformat())  # post-treatment messages due now
    assert api.get("/healthz").json()["overdue_messages"] == 0
    clock.advance(minutes=10)  # no beat is running in this test: nothing claims them
    health = api.get("/healthz").json()
    assert health["overdue_messages"] == 2 and "beat" in health["status"]
