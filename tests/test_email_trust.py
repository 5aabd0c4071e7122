"""Trust only what is proven: who sent an email (DKIM checked by us on the raw message, aligned with From;
or SPF as Mailgun's own topmost header states it), and what an unproven or automatic email may do
(docs/architecture.md#the-inbox)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import subprocess
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import dkim
import pytest
from sqlalchemy import select

from service.channels import mailgun
from service.channels.sender_trust import aligned, verify_sender
from service.core.enums import InboxState
from service.models import Escalation, Message, Patient, ScheduledMessage
from tests import test_inbound_email
from tests.inbound import answer_text
from tests.test_inbound_email import SECRET, answers, mailgun_form, messages, post

booked = test_inbound_email.booked  # the fixture: a patient treated two days ago, inbound email set up

PATIENT_FROM = "Ana Lopez <ana@example.com>"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes]]:
    """An RSA key per signing domain, made here, and the TXT record each domain would publish."""
    made = {}
    folder = tmp_path_factory.mktemp("dkim")
    for domain in ("example.com", "attacker.example"):
        private = folder / f"{domain}.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(private), "1024"], check=True, capture_output=True)
        public = subprocess.run(
            ["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
        made[domain] = (Path(private).read_bytes(), record)
    return made


def dns_for(keys: dict[str, tuple[bytes, bytes]]) -> Any:
    """The DNS hook: each domain's key at sel._domainkey.<domain>, as its owner would publish it."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        for domain, (_, record) in keys.items():
            if name.rstrip(b".") == f"sel._domainkey.{domain}".encode():
                return record
        return None

    return lookup


def raw_email(
    body: str, *, sign_as: str | None, keys: Any, from_header: str = PATIENT_FROM, **extra: str
) -> bytes:
    message = EmailMessage()
    message["From"] = from_header
    message["To"] = "care@glow.example"
    message["Subject"] = "Re: Your skin this week"
    message["Message-Id"] = f"<{secrets.token_hex(8)}@example.com>"
    message["Date"] = format_datetime(__import__("datetime").datetime(2026, 3, 2, 15, 0))
    for name, value in extra.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    raw = message.as_bytes()
    if sign_as is None:
        return raw
    private, _ = keys[sign_as]
    signature = dkim.sign(
        raw, b"sel", sign_as.encode(), private, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + raw


def mime_form(raw: bytes, *, clock: Any, sender: str = "ana@example.com") -> dict[str, str]:
    """Mailgun's post for a route forwarding to a URL ending in "mime": the whole message as it came."""
    timestamp = str(int(clock.now.timestamp()))
    token = secrets.token_hex(25)
    signature = hmac.new(SECRET.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {
        "recipient": "care@glow.example", "sender": sender, "from": PATIENT_FROM,
        "body-mime": raw.decode("utf-8"), "timestamp": timestamp, "token": token, "signature": signature,
    }  # fmt: skip


# -- the proof itself ------------------------------------------------------------------------------


def test_dkim_of_the_from_domain_verified_by_us_proves_the_sender(keys):
    raw = raw_email("hello", sign_as="example.com", keys=keys)
    trust = verify_sender(raw=raw, headers=(), envelope_sender="x@bounce.other",
                          from_address="ana@example.com", dns=dns_for(keys))  # fmt: skip
    assert trust.verified and trust.method == "dkim"


def test_a_valid_dkim_signature_of_the_attackers_own_domain_proves_nothing(keys):
    raw = raw_email("STOP", sign_as="attacker.example", keys=keys)
    trust = verify_sender(raw=raw, headers=(), envelope_sender="a@attacker.example",
                          from_address="ana@example.com", dns=dns_for(keys))  # fmt: skip
    assert not trust.verified and "attacker.example" in trust.reason


def test_a_tampered_body_or_an_unpublished_key_proves_nothing(keys):
    raw = raw_email("all fine", sign_as="example.com", keys=keys).replace(b"all fine", b"STOP now")
    assert not verify_sender(raw=raw, headers=(), envelope_sender="", from_address="ana@example.com",
                             dns=dns_for(keys)).verified  # fmt: skip
    signed = raw_email("hello", sign_as="example.com", keys=keys)
    assert not verify_sender(raw=signed, headers=(), envelope_sender="", from_address="ana@example.com",
                             dns=lambda name, timeout=5: None).verified  # fmt: skip


def test_spf_counts_only_as_mailgun_states_it_on_top_and_for_an_aligned_envelope():
    mailgun_says = (("X-Mailgun-Spf", "Pass"), ("Received", "by mxa.mailgun.org"), ("From", PATIENT_FROM))
    assert verify_sender(raw=None, headers=mailgun_says, envelope_sender="bounce@mail.example.com",
                         from_address="ana@example.com").verified  # fmt: skip
    # The same header written by the sender, below the Received line Mailgun added, proves nothing.
    sender_wrote = (
        ("X-Mailgun-Spf", "Neutral"),
        ("Received", "by mxa.mailgun.org"),
        ("X-Mailgun-Spf", "Pass"),
    )
    assert not verify_sender(raw=None, headers=sender_wrote[1:], envelope_sender="ana@example.com",
                             from_address="ana@example.com").verified  # fmt: skip
    assert not verify_sender(raw=None, headers=sender_wrote, envelope_sender="ana@example.com",
                             from_address="ana@example.com").verified  # fmt: skip
    # SPF passed for the attacker's own envelope domain: not the patient's address.
    assert not verify_sender(raw=None, headers=mailgun_says, envelope_sender="a@attacker.example",
                             from_address="ana@example.com").verified  # fmt: skip


def test_alignment_is_the_same_domain_or_a_subdomain_either_way():
    assert aligned("example.com", "example.com") and aligned("mail.example.com", "example.com")
    assert aligned("example.com", "eu.mail.example.com")
    assert not aligned("example.com.attacker.example", "example.com") and not aligned(
        "xample.com", "example.com"
    )


def test_the_raw_mime_route_is_parsed_and_kept_for_the_dkim_check(keys, clock):
    raw = raw_email("My cheek has pus", sign_as="example.com", keys=keys, Auto_Submitted="auto-forwarded")
    inbound = mailgun.inbound_message(mime_form(raw, clock=clock))
    assert inbound.body.strip() == "My cheek has pus" and inbound.raw == raw
    assert inbound.from_address == "ana@example.com" and inbound.automatic
    assert [name for name, _ in inbound.headers][:2] == ["DKIM-Signature", "From"]


# -- what an unproven or automatic email may do ------------------------------------------------------


def test_a_forged_email_is_paged_when_urgent_but_marked_never_answered_and_never_changes_consent(
    api, booked, session, clock
):
    """The attacker writes the patient's From and Mailgun's SPF header into the message (below the
    Received line Mailgun added): triaged and paged, marked "unverified sender", no answer, no opt-out."""
    form = mailgun_form("STOP emailing me. Also my lips are swelling and I can't breathe", clock=clock,
                        spf="Fail", **{"X-Mailgun-Spf": "Pass"})  # fmt: skip
    post(api, form)
    [message] = messages(session)
    assert not message.sender_verified and message.severity == "emergency"
    assert message.escalation_id is not None  # a person is paged: it may be true
    assert answers(session) == []  # but the real patient is never told "call 911" by a forger
    patient = session.get(Patient, booked["patient_id"])
    session.refresh(patient)
    assert patient.email_opted_out_at is None
    assert message.inbox_state is None or message.inbox_state == InboxState.NEEDS_REPLY


def test_the_page_for_an_unproven_email_says_so(api, booked, session, clock, make_clinic):
    from service.clinics import add_staff
    from service.models import Clinic
    from service.paging import lifecycle
    from service.paging.steps import run_step

    clinic = session.scalars(select(Clinic)).one()
    add_staff(session, clinic=clinic, name="Nia Nurse", phone="+12125550111", email="nia@glow.example",
              level=1, now=clock.now)  # fmt: skip
    session.commit()
    post(api, mailgun_form("my lips are swelling and I can't breathe", clock=clock, spf="Fail"))
    for step_id in lifecycle.claim_due_steps(session, now=clock.now, limit=10):
        run_step(session, step_id, now=clock.now)
    session.commit()
    pages = session.scalars(select(ScheduledMessage).where(ScheduledMessage.kind == "page")).all()
    texts = {row.channel: answer_text_for(session, row) for row in pages}
    assert "(unverified sender)" in texts["sms"] and "UNVERIFIED SENDER" in texts["email"]


def test_an_opt_out_by_proven_email_sends_a_confirmation_link_to_the_address_on_file(
    api, booked, session, clock
):
    post(api, mailgun_form("Please stop emailing me", clock=clock))
    [message] = messages(session)
    assert message.sender_verified
    patient = session.get(Patient, booked["patient_id"])
    session.refresh(patient)
    assert patient.email_opted_out_at is None  # not at once: the owner of the address confirms
    [confirm] = [row for row in answers(session) if row.template == "opt_out_confirm"]
    text = answer_text_for(session, confirm)
    link = next(word for word in text.split() if "/unsubscribe/" in word)
    assert api.post(link.removeprefix("https://aftercare.example").removeprefix("http://localhost:8000"),
                    data={"List-Unsubscribe": "One-Click"}).status_code == 200  # fmt: skip
    session.refresh(patient)
    assert patient.email_opted_out_at is not None
    # A second request the same day sends no second confirmation.
    post(api, mailgun_form("stop emailing me!!", clock=clock, message_id="<reply-2@mail.example>"))
    assert len([row for row in answers(session) if row.template == "opt_out_confirm"]) == 1


def answer_text_for(session: Any, row: ScheduledMessage) -> str:
    from service.outbox.purpose import Address, load_parties, purpose_of
    from service.rendering import render
    from service.settings import get_settings
    from service.wiring import purposes

    parties = load_parties(session, row.id)
    found = purpose_of(purposes(), row).address(session, parties, get_settings())
    assert isinstance(found, Address)
    return render(row.template, row.channel, found.language, {**found.context, **row.context}).body


def test_an_automatic_email_reporting_an_emergency_pages_but_is_never_answered(api, booked, session, clock):
    form = mailgun_form("I can't breathe and my throat is closing", clock=clock,
                        **{"Auto-Submitted": "auto-forwarded"})  # fmt: skip
    post(api, form)
    [message] = messages(session)
    assert message.automatic and message.severity == "emergency" and message.escalation_id is not None
    assert answers(session) == []


def test_an_out_of_office_that_says_urgent_pages_nobody_and_waits_in_the_inbox(api, booked, session, clock):
    form = mailgun_form("I am out of the office until Monday. For urgent matters call my assistant.",
                        clock=clock, **{"X-Autoreply": "yes"})  # fmt: skip
    post(api, form)
    [message] = messages(session)
    assert message.automatic and message.escalation_id is None
    assert session.scalars(select(Escalation)).all() == [] and answers(session) == []


def test_a_dkim_signed_email_through_the_mime_route_is_proven_and_answered(api, booked, session, clock, keys):
    raw = raw_email("There is yellow pus on my cheek", sign_as="example.com", keys=keys)
    response = post(api, mime_form(raw, clock=clock, sender="bounce@bounces.other"), dns=dns_for(keys))
    assert response.status_code == 200, response.text
    [message] = messages(session)
    assert message.sender_verified and message.sender_check.startswith("DKIM")
    assert message.severity == "urgent" and message.raw == raw
    assert "clinician" in (answer_text(session, message.id) or "").lower()


def test_the_attackers_own_dkim_gets_no_answer(api, booked, session, clock, keys):
    raw = raw_email("There is yellow pus on my cheek", sign_as="attacker.example", keys=keys)
    post(api, mime_form(raw, clock=clock, sender="a@attacker.example"), dns=dns_for(keys))
    [message] = messages(session)
    assert not message.sender_verified and message.escalation_id is not None and answers(session) == []


@pytest.mark.parametrize(
    ("encoded", "stored"),
    [
        (b"pus%00+and+fever", "pus\ufffd and fever"),  # a NUL byte: PostgreSQL's text refuses it
        (b"bad+%ED%A0%80+surrogate+%FF", None),  # invalid UTF-8, a lone surrogate's bytes
        (b"%E2%80%AEevif%E2%80%AC+pus", "\u202eevif\u202c pus"),  # bidirectional marks, kept
    ],
)
def test_an_email_of_any_bytes_is_stored_faithfully_or_normalised_never_a_500(
    api, booked, session, clock, encoded, stored
):
    form = mailgun_form("PLACEHOLDER", clock=clock)
    body = urlencode(form).encode().replace(b"PLACEHOLDER", encoded)
    response = api.post("/webhooks/email/inbound", content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 200, response.text
    [message] = messages(session)
    assert "\x00" not in message.body and not any("\ud800" <= c <= "\udfff" for c in message.body)
    if stored is not None:
        assert message.body == stored


def test_retention_drops_an_emails_raw_form_too(api, booked, session, clock, keys):
    from service.replies.retention import purge_texts

    raw = raw_email("pus on my cheek", sign_as="example.com", keys=keys)
    post(api, mime_form(raw, clock=clock), dns=dns_for(keys))
    assert purge_texts(session, now=clock.now + timedelta(days=400), days=365) == 1
    session.commit()
    [message] = messages(session)
    assert message.raw is None and message.headers == [] and message.body == ""


def test_the_staff_see_the_mark(api, booked, session, clock):
    post(api, mailgun_form("is flaking normal?", clock=clock, spf="Fail"))
    [message] = messages(session)
    from service.dashboard.views import marks

    assert "unverified sender" in marks(message)
    assert session.scalar(select(Message.inbox_state)) == InboxState.NEEDS_REPLY
