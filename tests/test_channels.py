"""The channels, driven through the real twilio client and smtplib against local fakes (no mocks of ours)."""

from __future__ import annotations

import io
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from twilio.request_validator import RequestValidator

from service.channels import build_channels
from service.channels.base import DeliveryError, OutgoingMessage, ProviderReceipt
from service.channels.console import ConsoleChannel
from service.channels.smtp import SMTPEmail, message_id_for
from service.channels.twilio.sms import TimeoutTwilioHttpClient, TwilioSMS
from service.settings import Settings
from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.twilio_server import FakeTwilio

PATIENT = "+15551230001"
CLINIC = "+15559870000"
TIMEOUT = 0.5  # seconds; short so the timeout tests are fast


def sms(outbox_id: int = 7, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "outbox_id": outbox_id,
        "channel": "sms",
        "to": PATIENT,
        "sender": CLINIC,
        "body": "Day 1 after microneedling: redness like a mild sunburn is normal. Reply with questions.",
        "status_callback": f"https://clinic.example/webhooks/twilio/status?outbox={outbox_id}",
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def email(outbox_id: int = 11, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "outbox_id": outbox_id,
        "channel": "email",
        "to": "jane.doe@example.org",
        "sender": "Glow Clinic <care@glow.example>",
        "subject": "Your skin after today's treatment",
        "body": "Redness for a day or two is normal.\nCall us for pus, fever or spreading redness.",
        "html": (
            "<p>Redness for a day or two is normal.</p><p>Call us for pus, fever or spreading redness.</p>"
        ),
        "headers": {
            "List-Unsubscribe": "<https://clinic.example/unsubscribe/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def channel(fake_twilio: FakeTwilio) -> TwilioSMS:
    return TwilioSMS(
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        api_base_url=fake_twilio.url,
        timeout=TIMEOUT,
    )


@pytest.fixture
def fake_smtp() -> Iterator[FakeSMTP]:
    with FakeSMTP() as server:
        yield server


@pytest.fixture
def mailer(fake_smtp: FakeSMTP) -> SMTPEmail:
    return SMTPEmail(host="127.0.0.1", port=fake_smtp.port, starttls=False, timeout=TIMEOUT)


def send_expecting_error(channel: TwilioSMS | SMTPEmail, message: OutgoingMessage) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        channel.send(message)
    return caught.value


# ----- SMS through Twilio -------------------------------------------------------------------------------


def test_an_sms_is_created_with_its_status_callback(channel: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    message = sms()

    receipt = channel.send(message)

    assert receipt.provider_id.startswith("SM") and len(receipt.provider_id) == 34
    assert receipt.status == "queued"
    [created] = fake_twilio.messages
    assert created["sid"] == receipt.provider_id
    assert (created["to"], created["from"], created["body"]) == (PATIENT, CLINIC, message.body)
    assert created["status_callback"] == message.status_callback
    [request] = fake_twilio.requests
    assert request["method"] == "POST"
    assert request["path"] == f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    assert request["form"]["StatusCallback"] == message.status_callback


def test_an_sms_without_a_status_callback_sends_none(channel: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    channel.send(sms(status_callback=None))

    assert "StatusCallback" not in fake_twilio.requests[0]["form"]


def test_the_http_client_always_has_a_timeout(channel: TwilioSMS) -> None:
    assert channel.http_client.timeout == TIMEOUT
    assert TwilioSMS.from_settings(Settings()).http_client.timeout == Settings().TWILIO_TIMEOUT_SECONDS > 0
    with pytest.raises(TypeError):
        TimeoutTwilioHttpClient()  # type: ignore[call-arg]  # no client without a timeout


def test_every_twilio_domain_is_sent_to_the_base_url() -> None:
    client = TimeoutTwilioHttpClient(timeout=1, api_base_url="http://127.0.0.1:8765/")

    assert (
        client.rewrite_url("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?PageSize=50")
        == "http://127.0.0.1:8765/2010-04-01/Accounts/AC1/Messages.json?PageSize=50"
    )
    assert (
        client.rewrite_url("https://messaging.twilio.com/v1/Services") == "http://127.0.0.1:8765/v1/Services"
    )


def test_without_a_base_url_requests_go_to_twilio_itself() -> None:
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"

    assert TimeoutTwilioHttpClient(timeout=1).rewrite_url(url) == url


@pytest.mark.parametrize(
    ("code", "meaning"),
    [(21211, "invalid number"), (21614, "not a mobile"), (21610, "opted out"), (30006, "landline")],
)
def test_a_hopeless_number_is_a_permanent_error_with_its_code(
    channel: TwilioSMS, fake_twilio: FakeTwilio, code: int, meaning: str
) -> None:
    fake_twilio.error_for_number(PATIENT, status=400, code=code, message=meaning)

    error = send_expecting_error(channel, sms())

    assert error.permanent and not error.outcome_unknown
    assert error.code == str(code)
    assert fake_twilio.messages == []


def test_an_error_message_never_carries_the_number_or_the_body(
    channel: TwilioSMS, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.error_for_number(PATIENT, code=21211)

    error = send_expecting_error(channel, sms())

    assert PATIENT not in str(error) and "microneedling" not in str(error)


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (429, None)])
def test_a_rate_limit_is_transient(
    channel: TwilioSMS, fake_twilio: FakeTwilio, status: int, code: int | None
) -> None:
    fake_twilio.fail_next(1, status=status, code=code)

    error = send_expecting_error(channel, sms())

    assert not error.permanent and not error.outcome_unknown


def test_another_client_error_is_transient_so_the_caller_retries_it_with_a_cap(
    channel: TwilioSMS, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.fail_next(1, status=400, code=21606)  # our From number is not SMS-capable: fixable

    error = send_expecting_error(channel, sms())

    assert not error.permanent and not error.outcome_unknown
    assert error.code == "21606"


def test_a_wrong_auth_token_is_refused_and_transient(fake_twilio: FakeTwilio) -> None:
    wrong = TwilioSMS(
        account_sid=fake_twilio.account_sid, auth_token="wrong", api_base_url=fake_twilio.url, timeout=TIMEOUT
    )

    error = send_expecting_error(wrong, sms())

    assert error.code == "20003" and not error.permanent and not error.outcome_unknown
    assert fake_twilio.messages == []


def test_a_server_error_leaves_the_outcome_unknown(channel: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(1, status=500)

    error = send_expecting_error(channel, sms())

    assert error.outcome_unknown and not error.permanent


def test_a_server_error_after_twilio_stored_the_message_is_settled_by_lookup(
    channel: TwilioSMS, fake_twilio: FakeTwilio
) -> None:
    since = datetime.now(UTC)
    fake_twilio.fail_next(1, status=503, create=True)

    error = send_expecting_error(channel, sms())

    assert error.outcome_unknown
    [created] = fake_twilio.messages
    assert channel.lookup(sms(), since=since) == ProviderReceipt(created["sid"], "queued")


def test_a_hang_longer_than_the_timeout_is_unknown_and_lookup_finds_the_message(
    channel: TwilioSMS, fake_twilio: FakeTwilio
) -> None:
    since = datetime.now(UTC)
    fake_twilio.hang_next(1, seconds=TIMEOUT * 4)

    error = send_expecting_error(channel, sms())

    assert error.outcome_unknown and not error.permanent
    [created] = fake_twilio.messages  # the request left and Twilio created the message
    found = channel.lookup(sms(), since=since)
    assert found is not None and found.provider_id == created["sid"]


def test_a_connection_dropped_after_the_request_left_is_unknown(
    channel: TwilioSMS, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.drop_next(1)

    error = send_expecting_error(channel, sms())

    assert error.outcome_unknown
    assert len(fake_twilio.messages) == 1


def test_twilio_unreachable_before_the_request_left_is_transient() -> None:
    unreachable = TwilioSMS(
        account_sid="AC" + "1" * 32,
        auth_token="token",
        api_base_url=f"http://127.0.0.1:{closed_port()}",
        timeout=TIMEOUT,
    )

    error = send_expecting_error(unreachable, sms())

    assert not error.outcome_unknown and not error.permanent


def test_lookup_returns_none_when_nothing_was_sent(channel: TwilioSMS) -> None:
    assert channel.lookup(sms(), since=datetime.now(UTC)) is None


def test_lookup_ignores_other_texts_and_texts_sent_long_before(
    channel: TwilioSMS, fake_twilio: FakeTwilio
) -> None:
    channel.send(sms(body="Day 3: keep using the gentle cleanser."))
    channel.send(sms(to="+15551230002"))

    assert channel.lookup(sms(), since=datetime.now(UTC)) is None
    assert channel.lookup(sms(to="+15551230002"), since=datetime.now(UTC) + timedelta(hours=1)) is None


def test_lookup_finds_a_message_beyond_the_first_page(channel: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    since = datetime.now(UTC)
    target = channel.send(sms(body="the one we lost"))
    for n in range(60):
        channel.send(sms(body=f"later message {n}"))

    found = channel.lookup(sms(body="the one we lost"), since=since)

    assert found is not None and found.provider_id == target.provider_id
    pages = [r for r in fake_twilio.requests if r["method"] == "GET"]
    assert len(pages) == 2 and pages[1]["query"]["Page"] == "1"


def test_lookup_while_twilio_is_down_raises_unknown(channel: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_until(seconds=60, status=503)

    with pytest.raises(DeliveryError) as caught:
        channel.lookup(sms(), since=datetime.now(UTC))

    assert caught.value.outcome_unknown


def test_twilio_recovers_after_the_outage_deadline(channel: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_until(seconds=0.2)
    assert send_expecting_error(channel, sms()).outcome_unknown

    threading.Event().wait(0.3)

    assert channel.send(sms()).status == "queued"


def test_the_fake_filters_by_date_sent_like_twilio(channel: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    channel.send(sms())
    now = datetime.now(UTC)

    assert len(channel.client.messages.list(to=PATIENT, date_sent_after=now - timedelta(minutes=1))) == 1
    assert channel.client.messages.list(to=PATIENT, date_sent_after=now + timedelta(minutes=1)) == []
    assert len(channel.client.messages.list(to=PATIENT, date_sent_before=now + timedelta(minutes=1))) == 1


class _CallbackCatcher:
    """A tiny web server standing in for our webhook, to see what the fake's status callback looks like."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server dispatches to
                raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                catcher.posts.append({"path": self.path, "form": form, "headers": dict(self.headers)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_fake_posts_a_status_callback_signed_like_twilio(
    channel: TwilioSMS, fake_twilio: FakeTwilio
) -> None:
    catcher = _CallbackCatcher()
    try:
        callback = f"{catcher.url}/webhooks/twilio/status?outbox=7"
        receipt = channel.send(sms(status_callback=callback))

        response = fake_twilio.post_status_callback(receipt.provider_id, "undelivered", error_code=30006)

        assert response.status_code == 200
        [post] = catcher.posts
        assert post["path"] == "/webhooks/twilio/status?outbox=7"
        assert post["form"]["MessageSid"] == receipt.provider_id
        assert post["form"]["MessageStatus"] == "undelivered"
        assert post["form"]["ErrorCode"] == "30006"
        validator = RequestValidator(fake_twilio.auth_token)
        assert validator.validate(callback, post["form"], post["headers"]["X-Twilio-Signature"])
        assert fake_twilio.message(receipt.provider_id)["status"] == "undelivered"
    finally:
        catcher.close()


# ----- email over SMTP ----------------------------------------------------------------------------------


def test_an_email_arrives_with_text_and_html_and_our_headers(mailer: SMTPEmail, fake_smtp: FakeSMTP) -> None:
    message = email()

    receipt = mailer.send(message)

    [received] = fake_smtp.received
    assert received.mail_from == "care@glow.example"
    assert received.rcpt_tos == ["jane.doe@example.org"]
    got = received.message
    assert got["Subject"] == message.subject
    assert got["From"] == message.sender
    assert got["To"] == message.to
    assert got["Date"] is not None
    assert got["Message-ID"] == "<aftercare.11@glow.example>" == receipt.provider_id
    assert got["List-Unsubscribe"] == "<https://clinic.example/unsubscribe/abc>"
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert got.get_content_type() == "multipart/alternative"
    text = got.get_body(preferencelist=("plain",))
    html = got.get_body(preferencelist=("html",))
    assert text is not None and "spreading redness" in text.get_content()
    assert html is not None and "<p>Redness" in html.get_content()


def test_an_email_without_html_is_plain_text(mailer: SMTPEmail, fake_smtp: FakeSMTP) -> None:
    mailer.send(email(html=None))

    assert fake_smtp.messages[0].get_content_type() == "text/plain"


def test_a_resent_email_has_the_same_message_id(mailer: SMTPEmail, fake_smtp: FakeSMTP) -> None:
    first = mailer.send(email())
    second = mailer.send(email())

    assert first.provider_id == second.provider_id == message_id_for(11, "care@glow.example")
    assert [m["Message-ID"] for m in fake_smtp.messages] == [first.provider_id] * 2


def test_template_headers_cannot_replace_the_message_id(mailer: SMTPEmail, fake_smtp: FakeSMTP) -> None:
    mailer.send(email(headers={"Message-ID": "<forged@elsewhere>", "From": "someone@else.example"}))

    [got] = fake_smtp.messages
    assert got["Message-ID"] == "<aftercare.11@glow.example>"
    assert got.get_all("From") == ["Glow Clinic <care@glow.example>"]


def test_a_refused_mailbox_is_permanent_with_the_smtp_code(mailer: SMTPEmail, fake_smtp: FakeSMTP) -> None:
    fake_smtp.fail_next(1, code=550)

    error = send_expecting_error(mailer, email())

    assert error.permanent and error.code == "550"
    assert fake_smtp.messages == []


def test_a_temporary_refusal_is_transient(mailer: SMTPEmail, fake_smtp: FakeSMTP) -> None:
    fake_smtp.fail_next(1, code=451)

    error = send_expecting_error(mailer, email())

    assert not error.permanent and not error.outcome_unknown and error.code == "451"


def test_rejected_content_is_permanent(mailer: SMTPEmail, fake_smtp: FakeSMTP) -> None:
    fake_smtp.fail_next(1, code=554, stage="data")

    error = send_expecting_error(mailer, email())

    assert error.permanent and error.code == "554"


def test_a_refused_connection_is_transient() -> None:
    mailer = SMTPEmail(host="127.0.0.1", port=closed_port(), starttls=False, timeout=TIMEOUT)

    error = send_expecting_error(mailer, email())

    assert not error.permanent and not error.outcome_unknown


def test_a_server_that_never_answers_times_out_as_transient() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts the connection; nobody ever sends the greeting
        mailer = SMTPEmail(host="127.0.0.1", port=silent.getsockname()[1], starttls=False, timeout=TIMEOUT)

        error = send_expecting_error(mailer, email())

    assert not error.permanent and not error.outcome_unknown


def test_starttls_is_required_when_configured(fake_smtp: FakeSMTP) -> None:
    mailer = SMTPEmail(host="127.0.0.1", port=fake_smtp.port, starttls=True, timeout=TIMEOUT)

    error = send_expecting_error(mailer, email())

    assert not error.permanent
    assert fake_smtp.messages == []  # never sent in the clear


# The fake requires AUTH over plain text on loopback; aiosmtpd rightly warns about that elsewhere.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_it_logs_in_when_a_username_is_set() -> None:
    with FakeSMTP(credentials=("aftercare", "s3cret")) as server:
        good = SMTPEmail(
            host="127.0.0.1", port=server.port, username="aftercare", password="s3cret", starttls=False
        )
        bad = SMTPEmail(
            host="127.0.0.1", port=server.port, username="aftercare", password="nope", starttls=False
        )

        good.send(email())
        error = send_expecting_error(bad, email())

        assert [r.login for r in server.received] == ["aftercare"]
    assert error.code == "535" and not error.permanent  # our credentials, fixable: retried with the cap


def test_smtp_cannot_look_up_a_sent_email(mailer: SMTPEmail) -> None:
    assert mailer.lookup(email(), since=datetime.now(UTC)) is None


# ----- console and wiring -------------------------------------------------------------------------------


def test_the_console_logs_the_whole_message_and_prints_it_to_a_given_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = io.StringIO()
    console = ConsoleChannel("email", stream=stream)

    with caplog.at_level(logging.INFO, logger="aftercare.console"):
        receipt = console.send(email())

    printed = stream.getvalue()
    assert "Subject: Your skin after today's treatment" in printed
    assert "spreading redness" in printed and "HTML part" in printed
    assert "spreading redness" in caplog.text
    assert receipt.status == "delivered"
    assert receipt.provider_id.startswith("console-email-11-") and len(receipt.provider_id) == 25
    assert console.lookup(email(), since=datetime.now(UTC)) is None


def test_every_console_receipt_is_distinct() -> None:
    console = ConsoleChannel("sms", stream=open("/dev/null", "w"))  # noqa: SIM115 - closed with the process

    assert console.send(sms()).provider_id != console.send(sms()).provider_id


def test_without_providers_both_channels_are_the_console() -> None:
    channels = build_channels(Settings(_env_file=None, TWILIO_ACCOUNT_SID="", SMTP_HOST=""))

    assert isinstance(channels["sms"], ConsoleChannel) and channels["sms"].name == "sms"
    assert isinstance(channels["email"], ConsoleChannel) and channels["email"].name == "email"


def test_configured_providers_are_used(fake_twilio: FakeTwilio, fake_smtp: FakeSMTP) -> None:
    settings = Settings(
        _env_file=None,
        TWILIO_ACCOUNT_SID=fake_twilio.account_sid,
        TWILIO_AUTH_TOKEN=fake_twilio.auth_token,
        TWILIO_API_BASE_URL=fake_twilio.url,
        TWILIO_TIMEOUT_SECONDS=TIMEOUT,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=fake_smtp.port,
        SMTP_STARTTLS=False,
    )

    channels = build_channels(settings)

    assert isinstance(channels["sms"], TwilioSMS) and isinstance(channels["email"], SMTPEmail)
    assert channels["sms"].http_client.timeout == TIMEOUT
    channels["sms"].send(sms())
    channels["email"].send(email())
    assert len(fake_twilio.messages) == 1 and len(fake_smtp.messages) == 1


def test_a_twilio_account_without_a_token_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="TWILIO_AUTH_TOKEN"):
        build_channels(Settings(_env_file=None, TWILIO_ACCOUNT_SID="AC" + "1" * 32, TWILIO_AUTH_TOKEN=""))


def test_the_twilio_client_takes_its_proxy_from_the_environment_once(monkeypatch):
    """Read at start-up instead of on every request, and still honoured (NO_PROXY too)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = TimeoutTwilioHttpClient(timeout=5)
    assert client.proxy.get("https") == "http://proxy.example:3128"
    assert client.session is not None and client.session.trust_env is False
    monkeypatch.setenv("NO_PROXY", "api.twilio.com")
    assert TimeoutTwilioHttpClient(timeout=5).proxy == {}
