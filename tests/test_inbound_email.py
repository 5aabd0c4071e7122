"""Patients answering by email: Mailgun's signed post, quoted history stripped before triage, answers by
email through the outbox, never to a robot."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.api.deps import get_now
from service.channels import build_channels
from service.channels.email_text import new_text
from service.models import Message, MessageStatus, ScheduledMessage
from service.sending.send import send_due_message
from service.settings import get_settings, reset_settings
from service.triage.loader import load_lexicon
from service.wiring import purposes
from tests.conftest import book_through_api
from tests.inbound import process_received

SECRET = "mailgun-signing-key-for-tests"

QUOTED_WARNING = """

On Tue, Mar 3, 2026 at 10:00 AM Glow Skin Clinic <care@glow.example> wrote:
> Hi Ana, flaking is normal: please don't pick.
> Watch for pus, yellow crusts, fever or chills, spreading redness, blisters or a cold sore.
> Trouble breathing, swelling of lips/tongue/throat, or fainting? Call 911 now.
> Pus, fever, spreading redness or blisters? Call us today at (212) 555-0100.
"""


@pytest.fixture
def booked(
    api: Any, make_clinic: Any, clock: Any, monkeypatch: pytest.MonkeyPatch, providers: Any
) -> dict[str, Any]:
    monkeypatch.setenv("INBOUND_EMAIL_SECRET", SECRET)
    reset_settings()
    _, key = make_clinic()
    return book_through_api(api, key, starts_at=clock.now - timedelta(days=2, hours=2))


def mailgun_form(
    body: str,
    *,
    clock: Any,
    message_id: str = "<reply-1@mail.example>",
    key: str = SECRET,
    token: str | None = None,
    sender: str = "ana@example.com",
    spf: str = "Pass",
    **headers: str,
) -> dict[str, str]:
    """A route post as Mailgun makes it: signed anew for each delivery (a fresh token), its own headers
    (its SPF check among them) on top of the message's."""
    timestamp = str(int(clock.now.timestamp()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    header_pairs = [
        ["X-Mailgun-Incoming", "Yes"],
        ["X-Mailgun-Spf", spf],
        ["Received", "from mail.example.com by mxa.mailgun.org with ESMTP"],
        ["From", "Ana Lopez <ana@example.com>"],
        ["Message-Id", message_id],
        ["Subject", "Re: Your skin this week"],
        *headers.items(),
    ]
    return {
        "recipient": "care@glow.example",
        "sender": sender,
        "from": "Ana Lopez <ana@example.com>",
        "subject": "Re: Your skin this week",
        "body-plain": body,
        "Message-Id": message_id,
        "message-headers": json.dumps(header_pairs),
        "timestamp": timestamp,
        "token": token,
        "signature": signature,
    }


def post(api: Any, form: dict[str, str], **options: Any) -> Any:
    """Post as Mailgun does; then what the inbound worker does with what was stored."""
    response = api.post("/webhooks/email/inbound", data=form)
    process_received(api.app.dependency_overrides[get_now](), **options)
    return response


def messages(session: Any) -> list[Message]:
    session.expire_all()
    return list(session.scalars(select(Message).order_by(Message.id)))


def answers(session: Any) -> list[ScheduledMessage]:
    session.expire_all()
    return list(session.scalars(select(ScheduledMessage).where(ScheduledMessage.kind == "reply")))


def test_all_good_above_our_quoted_infection_warning_is_none(api, booked, session, clock):
    response = post(api, mailgun_form("All good thanks!" + QUOTED_WARNING, clock=clock))
    assert response.status_code == 200, response.text
    [message] = messages(session)
    assert message.severity == "none" and message.escalation_id is None
    assert message.triage_text == "All good thanks!"
    assert "pus" in message.body  # the whole email is kept for staff
    assert answers(session) == []


def test_a_report_of_pus_by_email_is_urgent_and_answered_by_email_within_seconds(
    api, booked, session, clock, providers
):
    _, smtp = providers
    post(
        api,
        mailgun_form(
            "There is yellow pus on my cheek this morning and it hurts." + QUOTED_WARNING, clock=clock
        ),
    )
    [message] = messages(session)
    assert message.severity == "urgent" and message.escalation_id is not None
    [answer] = answers(session)
    assert answer.status == MessageStatus.QUEUED and answer.template == "reply_urgent"
    outcome = send_due_message(
        session,
        answer.id,
        now=clock.now,
        channels=build_channels(get_settings()),
        purposes=purposes(),
        settings=get_settings(),
    )
    assert outcome.value == "sent"
    [email] = smtp.wait_for_messages(1)
    assert email["To"] == "ana@example.com" and "clinician" in email["Subject"].lower()


def test_a_patient_who_unsubscribed_still_gets_the_answer_to_their_own_email(
    api, booked, session, clock, providers
):
    from service.models import Patient

    patient = session.get(Patient, booked["patient_id"])
    patient.email_opted_out_at = clock.now
    session.add(patient)
    session.commit()
    post(api, mailgun_form("I think I have a fever and the redness is spreading", clock=clock))
    [answer] = answers(session)
    outcome = send_due_message(
        session,
        answer.id,
        now=clock.now,
        channels=build_channels(get_settings()),
        purposes=purposes(),
        settings=get_settings(),
    )
    assert outcome.value == "sent"


def test_the_same_email_delivered_twice_is_stored_once(api, booked, session, clock):
    # Mailgun signs each delivery anew: the second carries a new token, and the same Message-Id.
    assert post(api, mailgun_form("I have a fever", clock=clock)).json()["duplicate"] is False
    assert post(api, mailgun_form("I have a fever", clock=clock)).json()["duplicate"] is True
    assert len(messages(session)) == 1 and len(answers(session)) == 1


def test_a_forged_or_stale_email_post_is_refused_and_stores_nothing(api, booked, session, clock):
    assert post(api, mailgun_form("I have a fever", clock=clock, key="wrong-key")).status_code == 403
    stale = mailgun_form("I have a fever", clock=clock)
    clock.advance(hours=1)
    assert post(api, stale).status_code == 403
    assert messages(session) == []


def test_an_out_of_office_is_stored_but_never_answered(api, booked, session, clock):
    form = mailgun_form("I am out of the office until Monday. For urgent matters call...", clock=clock,
                        **{"Auto-Submitted": "auto-replied"})  # fmt: skip
    post(api, form)
    [message] = messages(session)
    assert message.severity == "none" and answers(session) == []


def test_inbound_email_without_a_secret_configured_is_refused(api, clock, use_database):
    response = post(api, mailgun_form("hello", clock=clock))
    assert response.status_code == 403 and "INBOUND_EMAIL_SECRET" in response.json()["detail"]


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("Thanks, all fine\n\n> Watch for pus or fever", "Thanks, all fine"),
        (
            "Tengo fiebre\n\nEl mar, 3 mar 2026 a las 10:00, Clínica Glow (<care@glow.example>) escribió:"
            "\n> ¿Pus?",
            "Tengo fiebre",
        ),
        ("no pus\n> quoted fever\nbut it is red", "no pus\nbut it is red"),
    ],
)
def test_quoted_history_is_removed_in_english_and_spanish(email, expected):
    assert load_lexicon().strip_quoted(new_text(email)).strip() == expected
