"""Twilio's delivery status callbacks: signed, idempotent, and never moving a status backwards."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from service.api.app import create_app
from service.api.deps import get_now
from service.channels import build_channels
from service.models import MessageStatus, Patient, ScheduledMessage
from service.patients.links import unsubscribe_url
from service.settings import get_settings
from tests.stack import serving
from tests.test_sending import book, rows, run_dispatcher

S = MessageStatus


@pytest.fixture
def sent_sms(session, make_clinic, clock, providers) -> tuple[ScheduledMessage, dict[str, Any]]:
    """A post-treatment SMS that Twilio has accepted (the fake recorded its StatusCallback URL)."""
    clinic, _ = make_clinic()
    book(session, clinic, clock, starts_at=(clock.now - timedelta(minutes=150)).isoformat())
    run_dispatcher(session, clock, build_channels(get_settings()))
    twilio, _ = providers
    [row] = rows(session, step="post_immediate", channel="sms")
    return row, twilio.messages[0]


@pytest.fixture
def webhook_server(use_database, providers, clock) -> Any:
    """The app behind a real socket, so the fake Twilio can post signed callbacks to it."""
    app = create_app()
    app.dependency_overrides[get_now] = lambda: clock.now
    with serving(app) as base:
        yield base


def callback(twilio: Any, sid: str, status: str, server: str, **kwargs: Any) -> Any:
    """Twilio posts to the public URL; here that address is served by the local server behind it."""
    public = twilio.message(sid)["status_callback"]
    local = public.replace("https://aftercare.example", server)
    return twilio.post_status_callback(sid, status, deliver_to=local, **kwargs)


def test_signed_callbacks_replayed_in_any_order_end_at_delivered(
    session, sent_sms, providers, webhook_server
):
    twilio, _ = providers
    row, sms = sent_sms
    order = ["queued", "sent", "delivered", "sent", "queued", "delivered"]
    random.Random(7).shuffle(order)
    for status in order:
        assert callback(twilio, sms["sid"], status, webhook_server).status_code == 200
    [row] = rows(session, id=row.id)
    assert row.status == S.DELIVERED and row.delivered_at is not None


def test_a_forged_callback_is_refused_and_changes_nothing(session, sent_sms, providers, webhook_server):
    twilio, _ = providers
    row, sms = sent_sms
    response = callback(
        twilio, sms["sid"], "undelivered", webhook_server, error_code=30006, auth_token="wrong"
    )
    assert response.status_code == 403
    [after] = rows(session, id=row.id)
    assert after.status == S.SENT


def test_an_undelivered_landline_marks_the_patient_and_falls_back_to_email(
    session, sent_sms, providers, webhook_server
):
    twilio, _ = providers
    row, sms = sent_sms
    assert callback(twilio, sms["sid"], "undelivered", webhook_server, error_code=30006).status_code == 200
    [after] = rows(session, id=row.id)
    assert after.status == S.UNDELIVERED and after.error_code == "30006"
    patient = session.get(Patient, row.patient_id)
    session.refresh(patient)
    assert "landline" in patient.sms_unreachable_reason
    # The step already went by email too, so no second email is queued for it.
    assert len(rows(session, step="post_immediate", channel="email")) == 1


def test_a_callback_for_a_message_we_do_not_know_is_answered_200(
    session, sent_sms, providers, webhook_server
):
    twilio, _ = providers
    url = "https://aftercare.example/webhooks/twilio/status?message_id=99999"
    form = {"MessageSid": "SMdeadbeef", "MessageStatus": "delivered"}
    signature = RequestValidator(twilio.auth_token).compute_signature(url, form)
    response = httpx.post(
        f"{webhook_server}/webhooks/twilio/status?message_id=99999",
        data=form,
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == 200


def test_an_unknown_send_is_settled_by_its_status_callback(
    session, make_clinic, clock, providers, webhook_server
):
    twilio, _ = providers
    clinic, _ = make_clinic()
    twilio.hang_next(1, seconds=3)
    book(session, clinic, clock, starts_at=(clock.now - timedelta(minutes=150)).isoformat())
    run_dispatcher(session, clock, build_channels(get_settings()))
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.UNKNOWN
    callback(twilio, twilio.messages[0]["sid"], "delivered", webhook_server)
    [row] = rows(session, step="post_immediate", channel="sms")
    assert row.status == S.DELIVERED and row.provider_id == twilio.messages[0]["sid"]


def test_status_webhook_without_twilio_configured_is_refused(api):
    response = api.post("/webhooks/twilio/status", data={"MessageSid": "SM1", "MessageStatus": "delivered"})
    assert response.status_code == 403
    assert "TWILIO_AUTH_TOKEN" in response.json()["detail"]


def test_one_click_unsubscribe_stops_email(session, make_clinic, clock, providers, use_database):
    clinic, _ = make_clinic()
    booking = book(session, clinic, clock, starts_at=(clock.now + timedelta(days=3)).isoformat())
    link = unsubscribe_url(booking.patient_id, get_settings()).replace("https://aftercare.example", "")
    app = create_app()
    with TestClient(app) as client:
        assert client.post(link).status_code == 200
        assert client.post(link.rsplit(".", 1)[0] + ".forged").status_code == 404
    patient = session.scalars(select(Patient)).one()
    session.refresh(patient)
    assert patient.email_opted_out_at is not None


@pytest.mark.parametrize("never_handed", [S.SCHEDULED, S.QUEUED, S.CANCELLED, S.SUPPRESSED, S.SKIPPED])
@pytest.mark.parametrize("reported", ["sent", "delivered", "undelivered", "failed"])
def test_a_signed_callback_for_a_row_never_handed_to_the_provider_changes_nothing(
    api, session, make_clinic, clock, providers, never_handed, reported, monkeypatch
):
    """The callback URL carries our row's id; anyone with a valid signature (or a bug at the provider)
    naming a row that never left must not settle it: it would never be sent."""
    from sqlalchemy import update

    from service.settings import reset_settings

    twilio, _ = providers
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://aftercare.example")
    reset_settings()
    clinic, _ = make_clinic()
    book(session, clinic, clock, starts_at=(clock.now + timedelta(days=3)).isoformat())
    [row] = rows(session, step="pre_48h", channel="sms")
    session.execute(update(ScheduledMessage).where(ScheduledMessage.id == row.id).values(status=never_handed))
    session.commit()
    url = f"https://aftercare.example/webhooks/twilio/status?message_id={row.id}"
    form = {"MessageSid": "SM" + "d" * 32, "MessageStatus": reported, "AccountSid": twilio.account_sid}
    if reported in ("undelivered", "failed"):
        form["ErrorCode"] = "30006"
    signature = RequestValidator(twilio.auth_token).compute_signature(url, form)
    response = api.post(f"/webhooks/twilio/status?message_id={row.id}", data=form,
                        headers={"X-Twilio-Signature": signature})  # fmt: skip
    assert response.status_code == 200
    session.expire_all()
    [after] = rows(session, id=row.id)
    assert after.status == never_handed and after.provider_id is None and after.sent_at is None


def test_twilio_pythons_own_signature_vectors_are_judged_as_its_request_validator_judges_them():
    """Every form vector of twilio-python's tests (repeated keys included), through our check."""
    import json
    from pathlib import Path

    from starlette.datastructures import ImmutableMultiDict

    from service.channels.twilio.webhooks import signature_is_valid

    vectors = json.loads((Path(__file__).parent / "data" / "external" / "twilio_webhooks.json").read_text())[
        "signature_vectors"
    ]
    judged = 0
    for vector in vectors:
        if "params" not in vector:
            continue  # a JSON-body vector: not a form post
        form = ImmutableMultiDict(vector["params"])  # what the web framework hands over: every value
        ours = signature_is_valid(auth_token=vector["auth_token"], url=vector["url"], form=form,
                                  signature=vector["signature"])  # fmt: skip
        theirs = RequestValidator(vector["auth_token"]).validate(vector["url"], form, vector["signature"])
        assert ours == theirs == vector["valid"], vector["test"]
        judged += 1
    assert judged >= 5


def test_a_post_with_a_repeated_key_signed_as_twilio_signs_it_is_accepted(api, use_database, monkeypatch):
    """twilio-python's repeated-key vector, sent to our route: refused with 403 before."""
    import json
    from pathlib import Path
    from urllib.parse import urlencode

    from service.settings import reset_settings

    vector = next(
        v
        for v in json.loads(
            (Path(__file__).parent / "data" / "external" / "twilio_webhooks.json").read_text()
        )["signature_vectors"]
        if "duplicate" in v["test"]
    )
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", vector["auth_token"])
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://aftercare.example")
    reset_settings()
    params = [*map(tuple, vector["params"]), ("MessageSid", "SM" + "f" * 32), ("MessageStatus", "delivered")]
    from starlette.datastructures import ImmutableMultiDict

    url = "https://aftercare.example/webhooks/twilio/status?message_id=999"
    signature = RequestValidator(vector["auth_token"]).compute_signature(url, ImmutableMultiDict(params))
    response = api.post("/webhooks/twilio/status?message_id=999", content=urlencode(params),
                        headers={"X-Twilio-Signature": signature,
                                 "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 200, response.text
