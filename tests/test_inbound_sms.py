"""Patients texting back: signed webhooks, exactly-once storage, compliance keywords, triage and answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import Session
from twilio.request_validator import RequestValidator

from service import db
from service.api.app import create_app
from service.api.deps import get_now
from service.channels import build_channels
from service.models import Message, MessageStatus, Patient, ScheduledMessage
from service.settings import get_settings, reset_settings
from tests.conftest import book_through_api
from tests.fakes.twilio_server import DEFAULT_AUTH_TOKEN
from tests.inbound import answer_text, process_received
from tests.stack import at_the_same_moment, serving
from tests.test_sending import run_dispatcher

AUTH_TOKEN = DEFAULT_AUTH_TOKEN  # the fake Twilio's, so tests that also send SMS sign with the same token
PUBLIC = "https://aftercare.example"
CLINIC_NUMBER = "+12125550100"
PATIENT = "+12125550147"


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch, use_database: str) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("PUBLIC_BASE_URL", PUBLIC)
    reset_settings()


@pytest.fixture
def booked(api: Any, make_clinic: Any, clock: Any, twilio_env: None) -> dict[str, Any]:
    """A patient treated yesterday (day 1), with a booking the clinic made through the API."""
    _, key = make_clinic()
    return book_through_api(api, key, starts_at=clock.now - timedelta(days=1, hours=2))


def sms_form(body: str, sid: str = "SM" + "a" * 32, sender: str = PATIENT, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": sender, "To": CLINIC_NUMBER,
        "Body": body, "NumMedia": "0", **extra,
    }  # fmt: skip


@dataclass(frozen=True)
class Posted:
    """The webhook's response, and what the inbound worker then did with the message."""

    response: Any
    message_id: int | None
    text: str  # our answer as the sender reads it; "" when we answer nothing

    @property
    def status_code(self) -> int:
        return int(self.response.status_code)

    @property
    def headers(self) -> Any:
        return self.response.headers


def post_sms(api: Any, form: dict[str, str], *, token: str = AUTH_TOKEN, process: bool = True) -> Posted:
    """Post a signed SMS, then process what was stored as the inbound worker would (with the API clock)."""
    signature = RequestValidator(token).compute_signature(f"{PUBLIC}/webhooks/twilio/sms", form)
    response = api.post("/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature})
    if response.status_code != 200:
        return Posted(response, None, "")
    # Nothing else happens in the request: the answer is always empty TwiML.
    assert "<Message>" not in response.text and response.headers["content-type"].startswith("application/xml")
    if process:
        process_received(api.app.dependency_overrides[get_now]())
    with Session(db.get_engine()) as session:
        message_id = session.scalar(
            select(Message.id).where(Message.provider_id == form["MessageSid"]).order_by(Message.id.desc())
        )
        answer = answer_text(session, message_id) if message_id is not None else None
    return Posted(response, message_id, answer or "")


_sid_counter = iter(range(10**6))


def text(api: Any, body: str, *, process: bool = True, **extra: str) -> Posted:
    """The patient texts ``body``; returns the webhook's response and our answer."""
    return post_sms(api, sms_form(body, sid=f"SM{next(_sid_counter):032d}", **extra), process=process)


def stored(session: Any) -> list[Message]:
    session.expire_all()
    return list(session.scalars(select(Message).order_by(Message.id)))


def test_a_signed_report_of_pus_and_fever_is_stored_once_answered_urgently_and_awaits_escalation(
    api, booked, session
):
    form = sms_form("I have yellow pus and a fever")
    first = post_sms(api, form)
    again = post_sms(api, form)  # Twilio retries the webhook
    assert first.status_code == 200 and first.headers["content-type"].startswith("application/xml")
    assert "clinician will contact you" in first.text
    assert again.message_id == first.message_id and again.text == first.text
    [message] = stored(session)
    assert message.severity == "urgent" and message.escalation_id is not None
    assert message.booking_id == booked["id"] and message.patient_id == booked["patient_id"]
    assert {f["concept"] for f in message.findings} & {"pus", "fever"}


def test_an_unsigned_or_forged_sms_is_refused_and_stores_nothing(api, booked, session):
    form = sms_form("I have yellow pus and a fever")
    assert api.post("/webhooks/twilio/sms", data=form).status_code == 403
    assert post_sms(api, form, token="not-the-token").status_code == 403
    assert stored(session) == []


def test_the_signature_is_checked_against_the_public_url_behind_a_proxy(api, booked, session):
    form = sms_form("thank you!")
    # Signed for the public https URL; the request reaches us as plain http on another host.
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{PUBLIC}/webhooks/twilio/sms", form)
    response = api.post(
        "http://internal:8000/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200


def test_stop_opts_out_of_sms_with_an_empty_answer_and_start_opts_back_in(api, booked, session):
    response = text(api, " Stop. ", process=False)
    assert response.status_code == 200 and response.text == ""
    # In force before the webhook answered, before any worker ran.
    patient = session.get(Patient, booked["patient_id"])
    session.refresh(patient)
    assert patient.sms_opted_out_at is not None
    text(api, "START")
    session.refresh(patient)
    assert patient.sms_opted_out_at is None


@pytest.mark.parametrize(
    "keyword", ["STOP", "stopall", "Unsubscribe", "CANCEL", "end", "QUIT", "REVOKE", "optout"]
)
def test_every_opt_out_keyword_alone_opts_out(api, booked, session, keyword):
    text(api, keyword)
    patient = session.get(Patient, booked["patient_id"])
    session.refresh(patient)
    assert patient.sms_opted_out_at is not None


def test_help_answers_with_the_clinics_name_number_and_emergency_advice(api, booked):
    reply = text(api, "HELP").text
    assert "Glow Skin Clinic" in reply and "(212) 555-0100" in reply and "911" in reply


@pytest.mark.parametrize(
    "body", ["please stop the burning", "CANCEL my appointment", "can I end my treatment plan early?"]
)
def test_a_keyword_inside_a_sentence_is_not_an_opt_out(api, booked, session, body):
    text(api, body)
    patient = session.get(Patient, booked["patient_id"])
    session.refresh(patient)
    assert patient.sms_opted_out_at is None
    assert stored(session)[-1].keyword is None


def test_a_plain_language_opt_out_is_honoured_and_confirmed(api, booked, session):
    reply = text(api, "stop texting me please").text
    assert "no more texts" in reply
    patient = session.get(Patient, booked["patient_id"])
    session.refresh(patient)
    assert patient.sms_opted_out_at is not None


def test_a_plain_language_opt_out_with_symptoms_does_both(api, booked, session):
    reply = text(api, "stop texting me, my face is oozing pus").text
    assert "clinician will contact you" in reply
    [message] = stored(session)
    assert message.keyword == "stop" and message.severity == "urgent" and message.escalation_id is not None
    patient = session.get(Patient, booked["patient_id"])
    session.refresh(patient)
    assert patient.sms_opted_out_at is not None


def test_an_opted_out_patient_reporting_symptoms_is_still_answered(api, booked, session):
    text(api, "STOP")
    reply = text(api, "my lips and tongue are swelling and it's hard to breathe").text
    assert "911" in reply and "emergency" in reply.lower()
    assert stored(session)[-1].severity == "emergency"


def test_an_mms_photo_is_kept_for_staff(api, booked, session):
    url = "https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME1"
    text(api, "is this normal?", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
    assert stored(session)[-1].media == [{"url": url, "content_type": "image/jpeg"}]


def test_an_unknown_sender_gets_the_clinics_number_and_the_message_is_kept(api, booked, session):
    reply = text(api, "hi is this the clinic? my face is red", sender="+12125550999").text
    assert "(212) 555-0100" in reply
    message = stored(session)[-1]
    assert message.patient_id is None and message.clinic_id is not None


def test_short_texts_in_a_row_are_read_together(api, booked, session, clock):
    text(api, "I have")
    clock.advance(seconds=40)
    reply = text(api, "pus").text
    assert "clinician" in reply
    assert stored(session)[-1].severity == "urgent"


def test_routine_answers_are_capped_per_hour_so_robots_cannot_talk_forever(api, booked, clock):
    replies = []
    for minute in range(5):
        clock.advance(minutes=6)
        replies.append(text(api, f"when can I wear makeup? ({minute})").text)
    answered = [r for r in replies if r]
    assert len(answered) == 3


def test_thanks_gets_no_answer(api, booked, session):
    assert text(api, "Thank you so much!! 🙏").text == ""
    assert stored(session)[-1].severity == "none"


def test_two_identical_posts_at_the_same_moment_store_one_message(use_database, booked, session, clock):
    app = create_app()
    app.dependency_overrides[get_now] = lambda: clock.now
    form = sms_form("my face is swollen and hot", sid="SM" + "b" * 32)
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{PUBLIC}/webhooks/twilio/sms", form)
    with serving(app) as base:
        answers = at_the_same_moment(
            4,
            lambda: httpx.post(
                f"{base}/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature}
            ),
        )
    assert {response.status_code for response in answers} == {200}
    assert len({response.text for response in answers}) == 1
    assert session.scalar(select(func.count()).select_from(Message)) == 1


def test_after_stop_the_next_scheduled_sms_is_suppressed_and_after_start_it_goes(
    api, booked, session, clock, providers
):
    twilio, _ = providers
    text(api, "STOP")
    channels = build_channels(get_settings())
    clock.advance(days=1)  # the day-3 warning falls due
    run_dispatcher(session, clock, channels)
    assert twilio.messages == []
    text(api, "START")
    clock.advance(days=1)  # the 72-hour check falls due
    run_dispatcher(session, clock, channels)
    assert len(twilio.messages) == 1
    assert [m.keyword for m in stored(session)] == ["stop", "start"]
    sms_rows = session.scalars(
        select(ScheduledMessage).where(
            ScheduledMessage.channel == "sms", ScheduledMessage.step == "day3_warning"
        )
    ).all()
    assert [r.status for r in sms_rows] == [MessageStatus.SUPPRESSED]


def test_an_answer_carries_the_emergency_line_with_the_patients_own_countrys_number(
    api, make_clinic, clock, twilio_env
):
    """A Madrid patient of a New York clinic is told 112, not 911."""
    _, key = make_clinic()
    book_through_api(api, key, starts_at=clock.now - timedelta(days=1), patient={"phone": "+34 612 345 678"})
    answer = post_sms(
        api, sms_form("is it normal that it is a bit flaky?", sid="SM" + "4" * 32, sender="+34612345678")
    )
    assert "Call 112 now" in answer.text and "911" not in answer.text
    urgent = post_sms(api, sms_form("there is pus", sid="SM" + "5" * 32, sender="+34612345678"))
    assert "Call 112 now" in urgent.text


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (b"pus%00+and+fever", "pus\ufffd and fever"),  # a NUL byte: PostgreSQL's text refuses it
        (b"bad+%ED%A0%80+surrogate+%FF", None),  # invalid UTF-8
        (b"%E2%80%AEpus%E2%80%AC+and+fever", "\u202epus\u202c and fever"),  # bidirectional marks, kept
    ],
)
def test_an_sms_of_any_bytes_is_stored_faithfully_or_normalised_never_a_500(
    api, booked, session, encoded, expected
):
    """Twilio retries a 500 for ever: a message that cannot be stored is a message lost."""
    form = sms_form("PLACEHOLDER", sid="SM" + "e" * 32)
    raw = urlencode(form).encode().replace(b"PLACEHOLDER", encoded)
    # Twilio signs the values as decoded: sign what the server will read.
    decoded = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{PUBLIC}/webhooks/twilio/sms", decoded)
    response = api.post("/webhooks/twilio/sms", content=raw, headers={
        "X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded",
    })  # fmt: skip
    assert response.status_code == 200, response.text
    [message] = stored_messages = stored(session)
    assert "\x00" not in message.body and not any("\ud800" <= c <= "\udfff" for c in message.body)
    if expected is not None:
        assert message.body == expected
    assert len(stored_messages) == 1
