"""A real SMTP server (aiosmtpd) on loopback that records what it receives and refuses on demand."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import cached_property
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["rcpt", "data"]

_DEFAULT_REPLIES = {
    421: "421 4.3.2 Service shutting down",
    450: "450 4.2.1 Mailbox busy, try again later",
    451: "451 4.3.0 Temporary local problem, try again later",
    452: "452 4.3.1 Insufficient system storage",
    550: "550 5.1.1 Mailbox unavailable",
    552: "552 5.3.4 Message too big",
    554: "554 5.7.1 Message rejected",
}


@dataclass(frozen=True)
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    login: str | None = None
    time: float = field(default_factory=time.time)

    @cached_property
    def message(self) -> EmailMessage:
        # Parsed when first read, not on the server's event loop: a burst of hundreds would queue there.
        return cast(EmailMessage, email.message_from_bytes(self.raw, policy=email.policy.default))


class _FreePortController(Controller):
    """aiosmtpd's Controller bound to port 0: learn the port the kernel chose before aiosmtpd connects to
    itself to check the server is up (it would otherwise try port 0)."""

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:
            self.port = int(self.server.sockets[0].getsockname()[1])
        super()._trigger_server()


class _Handler:
    def __init__(self, fake: FakeSMTP) -> None:
        self.fake = fake

    async def handle_RCPT(  # the name aiosmtpd calls
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.fake._take_failure("rcpt")
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self.fake._take_failure("data")
        if refusal is not None:
            return refusal
        raw = bytes(envelope.original_content or envelope.content or b"")
        auth_data = session.auth_data
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None
        self.fake._record(
            ReceivedEmail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                raw=raw,
                login=login,
            )
        )
        return "250 2.0.0 Message accepted for delivery"


class FakeSMTP:
    """``with FakeSMTP() as smtp:`` — an SMTP server on 127.0.0.1 at ``smtp.port``.

    ``smtp.messages`` are the parsed emails (``EmailMessage``, policy ``default``), ``smtp.received`` the
    same with their envelopes. ``fail_next()`` refuses the next RCPT TO or DATA with a given code. With
    ``credentials=(user, password)`` it requires AUTH (over plain text: it is loopback and a test).
    """

    def __init__(self, *, host: str = "127.0.0.1", credentials: tuple[str, str] | None = None) -> None:
        self.host = host
        self.credentials = credentials
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._received: list[ReceivedEmail] = []
        self._failures: dict[Stage, list[str]] = {"rcpt": [], "data": []}
        options: dict[str, Any] = {}
        if credentials is not None:
            options.update(auth_required=True, auth_require_tls=False, authenticator=self._authenticate)
        self._controller = _FreePortController(_Handler(self), hostname=host, port=0, **options)
        self._running = False

    def start(self) -> FakeSMTP:
        if not self._running:
            self._controller.start()
            self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False

    def __enter__(self) -> FakeSMTP:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def received(self) -> list[ReceivedEmail]:
        with self._lock:
            return list(self._received)

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    def wait_for_messages(self, count: int, *, timeout: float = 10.0) -> list[EmailMessage]:
        """Block until at least ``count`` emails arrived (for end-to-end tests); raise on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._received)} of {count} emails after {timeout}s")
                self._changed.wait(left)
            return [r.message for r in self._received]

    def fail_next(
        self, n: int = 1, code: int = 451, *, stage: Stage = "rcpt", reply: str | None = None
    ) -> None:
        """Answer the next ``n`` RCPT TO (or DATA, with ``stage="data"``) commands with ``code``."""
        if stage not in self._failures:
            raise ValueError(f"stage must be 'rcpt' or 'data', not {stage!r}")
        line = reply or _DEFAULT_REPLIES.get(code) or f"{code} Refused by the fake server"
        if not line.startswith(str(code)):
            line = f"{code} {line}"
        with self._lock:
            self._failures[stage].extend([line] * n)

    def reset(self) -> None:
        """Forget pending failures (recorded emails are kept)."""
        with self._lock:
            for pending in self._failures.values():
                pending.clear()

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
        self.reset()

    def _take_failure(self, stage: Stage) -> str | None:
        with self._lock:
            pending = self._failures[stage]
            return pending.pop(0) if pending else None

    def _record(self, received: ReceivedEmail) -> None:
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if self.credentials is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.credentials
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
