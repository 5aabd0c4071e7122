"""Email over SMTP with the standard library.

SMTP cannot be asked afterwards whether a message went, so every failure we cannot attribute to a refusal
is transient: docs/architecture.md#delivery-guarantee accepts that an email may rarely go twice after a
crash or a lost "250", and the deterministic Message-ID lets mail clients show the two as one message.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import ssl
import threading
import time
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from functools import cache
from typing import Any

from service.channels.base import DeliveryError, OutgoingMessage, ProviderReceipt

logger = logging.getLogger(__name__)

# Headers we set ourselves; a template's extra headers may not replace them (a second From or Message-ID
# would make the message look forged to receiving servers).
_RESERVED_HEADERS = frozenset({"from", "to", "subject", "date", "message-id"})


def message_id_for(outbox_id: int | str, sender: str) -> str:
    """The Message-ID of an outbox row's email: the same on every attempt, so a resend is recognisable."""
    _, address = parseaddr(sender)
    domain = address.rpartition("@")[2].strip() or "localhost"
    return f"<aftercare.{outbox_id}@{domain}>"


def build_email(message: OutgoingMessage, *, now: datetime | None = None) -> Message:
    """The MIME message: a plain-text part and, when given, an HTML alternative.

    Built with the standard library's compat32 classes rather than ``EmailMessage``: the same MIME, in a
    fifth of the time, which counts at a burst of thousands (docs/benchmarks.md#dispatch).
    """
    values = [message.subject or "", message.sender, message.to, *message.headers.values()]
    if any("\n" in value or "\r" in value for value in values):
        raise ValueError("a header value contains a line break")
    if message.html:
        email: Message = MIMEMultipart("alternative")
        email.attach(_text_part(message.body, "plain"))
        email.attach(_text_part(message.html, "html"))
    else:
        email = _text_part(message.body, "plain")
    email["Subject"] = _header(message.subject or "")
    email["From"] = _address(message.sender)
    email["To"] = _address(message.to)
    email["Date"] = format_datetime(now or datetime.now(UTC))
    email["Message-ID"] = message_id_for(message.reference or message.outbox_id, message.sender)
    for name, value in message.headers.items():
        if name.lower() in _RESERVED_HEADERS:
            continue
        del email[name]
        email[name] = _header(value)
    return email


def _quoted_printable_utf8() -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = QP  # readable in the raw message, unlike base64
    return charset


_UTF8 = _quoted_printable_utf8()


def _text_part(text: str, subtype: str) -> MIMEText:
    # MIMEText hands its charset to set_payload, which takes a Charset as well as a name; typeshed allows
    # only the name, and the name alone would give base64.
    return MIMEText(text, subtype, _UTF8)  # type: ignore[arg-type]  # a Charset works: see above


def _header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


def _address(value: str) -> str:
    name, address = parseaddr(value)
    if not address or not address.isascii():
        raise ValueError(f"not an email address we can send to: {value[:80]!r}")
    return formataddr((name, address), charset="utf-8") if name else address


@cache
def _local_hostname() -> str:
    """The name we greet SMTP servers with. smtplib looks it up (a DNS query) on every connection."""
    return socket.getfqdn()


def _by_code(code: int, text: str) -> DeliveryError:
    # 5xx: the server refuses for good (unknown mailbox, rejected content); 4xx: try again later.
    return DeliveryError(text, permanent=500 <= code < 600, code=str(code))


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return text.strip()[:200]


class SMTPEmail:
    """The email channel. Each worker thread keeps its SMTP connection between messages: at a burst the
    greeting, EHLO, STARTTLS and AUTH of a new connection cost more round trips than the message itself.
    A connection idle longer than ``IDLE_SECONDS`` (servers drop them), one that fails a NOOP, and one that
    saw any error are closed and never reused."""

    IDLE_SECONDS = 30.0

    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        username: str = "",
        password: str = "",
        starttls: bool = True,
        ssl_on_connect: bool = False,
        timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.ssl_on_connect = ssl_on_connect
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Any) -> SMTPEmail:
        return cls(
            host=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.SMTP_USERNAME,
            password=settings.SMTP_PASSWORD,
            # Port 465 speaks TLS from the first byte (RFC 8314); STARTTLS would hang there.
            ssl_on_connect=settings.SMTP_PORT == 465,
            starttls=settings.SMTP_STARTTLS and settings.SMTP_PORT != 465,
            timeout=settings.SMTP_TIMEOUT_SECONDS,
        )

    def _connect(self) -> smtplib.SMTP:
        if self.ssl_on_connect:
            context = self.ssl_context or ssl.create_default_context()
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=context, local_hostname=_local_hostname()
            )
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout, local_hostname=_local_hostname())
        try:
            if self.starttls:
                # Refuse to fall back to plain text when the server does not offer STARTTLS: the message
                # carries health information (smtplib raises SMTPNotSupportedError, mapped below).
                smtp.starttls(context=self.ssl_context or ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: OutgoingMessage) -> ProviderReceipt:
        try:
            email = build_email(message)
        except (ValueError, TypeError) as exc:
            # A header with a newline or similar: the same input fails on every attempt.
            raise DeliveryError(f"cannot build email: {exc}", permanent=True, code="invalid-message") from exc
        message_id = str(email["Message-ID"])
        try:
            smtp = self._connection()
            try:
                smtp.send_message(
                    email,
                    from_addr=parseaddr(message.sender)[1] or message.sender,
                    to_addrs=[parseaddr(message.to)[1] or message.to],
                )
            except BaseException:
                _close(smtp)  # its state after an error is unknown: never reused
                raise
            self._local.smtp = (smtp, time.monotonic())
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()), (450, b"recipient refused"))
            raise _by_code(code, f"SMTP refused the recipient: {code} {_reply_text(reply)}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the patient's address: fixable by the operator, so retried with the cap
            # instead of failing this patient's email for good.
            raise DeliveryError(f"SMTP login failed: {exc.smtp_code}", code=str(exc.smtp_code)) from exc
        except smtplib.SMTPResponseException as exc:
            # SMTPSenderRefused, SMTPDataError, SMTPHeloError, ... all carry the server's code.
            raise _by_code(
                exc.smtp_code, f"SMTP error {exc.smtp_code}: {_reply_text(exc.smtp_error)}"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Connection refused, timeouts, disconnects, TLS failures, STARTTLS not offered: transient. A
            # disconnect after DATA may mean it went; the delivery guarantee (docs/architecture.md) accepts
            # the rare duplicate with the same id.
            raise DeliveryError(f"SMTP unavailable: {type(exc).__name__}: {exc}") from exc
        logger.info("smtp accepted outbox %s as %s", message.outbox_id, message_id)
        return ProviderReceipt(provider_id=message_id, status="accepted")

    def _connection(self) -> smtplib.SMTP:
        """This thread's open connection when it is fresh and answers a NOOP, else a new one. A reused
        connection is taken out of the cache while in use, so an error cannot leave it there."""
        cached, self._local.smtp = getattr(self._local, "smtp", None), None
        if cached is not None:
            smtp, last_used = cached
            if time.monotonic() - last_used < self.IDLE_SECONDS and _answers(smtp):
                return smtp
            _close(smtp)
        return self._connect()

    def lookup(self, message: OutgoingMessage, *, since: datetime) -> ProviderReceipt | None:
        # SMTP has no way to ask whether a message went; see the module docstring.
        return None


def _answers(smtp: smtplib.SMTP) -> bool:
    try:
        return smtp.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _close(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        smtp.close()
