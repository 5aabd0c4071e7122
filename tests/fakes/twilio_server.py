"""A fake Twilio Messages API: a real HTTP server in a thread, for the real twilio-python client.

The channel tests, the end-to-end tests (Celery workers in subprocesses reach it over HTTP through
``TWILIO_API_BASE_URL``) and a developer's sandbox (``python -m tests.fakes.twilio_server --port 8765``)
all use it. It records what it received and fails on demand: the failures a clinic meets in production
(rate limits, 5xx, an outage, a hung response after the message was created, a dropped connection) are
the ones our delivery guarantee has to survive.

Only the Messages resource is implemented:

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` creates a message (201),
- ``GET  /2010-04-01/Accounts/{AccountSid}/Messages.json`` lists them (To, From, DateSent, DateSent<,
  DateSent>, Page, PageSize), newest first,
- ``GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`` fetches one.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator

logger = logging.getLogger("tests.fakes.twilio")

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 30 + "fa"
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token"

_ROUTE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages(?:/(?P<sid>[^/]+))?\.json$")
# An MMS photo, as Twilio's MediaUrl{N} points at it: the file itself (GET), removable (DELETE).
_MEDIA = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<message>[^/]+)/Media/(?P<sid>[^/.]+)$"
)

# GSM 03.38: text in these characters is 7-bit (160 a segment); anything else makes the whole SMS UCS-2.
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = "^{}\\[~]|€\f"


def num_segments(body: str) -> int:
    """How many SMS segments Twilio would bill for ``body``."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in body):
        length = sum(2 if ch in _GSM_EXTENDED else 1 for ch in body)
        single, multi = 160, 153
    else:
        # UCS-2 counts UTF-16 code units: an emoji takes two.
        length = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    if length <= single:
        return 1
    return math.ceil(length / multi)


def _rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment) if moment is not None else None


def _parse_date_filter(value: str) -> tuple[datetime, bool]:
    """A DateSent filter value as (moment, is_whole_day); twilio-python sends ``%Y-%m-%dT%H:%M:%SZ``."""
    for pattern, whole_day in (("%Y-%m-%dT%H:%M:%SZ", False), ("%Y-%m-%d", True)):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC), whole_day
        except ValueError:
            continue
    raise ValueError(value)


@dataclass
class _Failure:
    status: int
    code: int | None
    message: str
    create: bool = False  # create the message anyway (a 5xx after Twilio stored it)


class FakeTwilio:
    """A threaded fake of Twilio's Messages API on 127.0.0.1.

    Usable as a context manager (``with FakeTwilio() as fake:``) or with ``start()``/``stop()``.
    ``fake.url`` is the value for ``TWILIO_API_BASE_URL``; ``fake.account_sid`` and ``fake.auth_token`` are
    the credentials it accepts (HTTP basic auth, as the client sends them).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        check_auth_token: bool = True,
        latency: float = 0.0,
    ) -> None:
        self.host = host
        # Seconds before each answer, as the real API takes (about 0.1 s): benchmarks measure against it.
        self.latency = latency
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.check_auth_token = check_auth_token
        self._requested_port = port
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._requests: list[dict[str, Any]] = []
        self._messages: list[dict[str, Any]] = []
        self._fail_next: list[_Failure] = []
        self._fail_until: tuple[float, _Failure] | None = None
        self._number_errors: dict[str, _Failure] = {}
        self._hang_next: list[float] = []
        # Message creates held before Twilio acts on them: (seconds, how many more; None = every one).
        self._accept_late: tuple[float, int | None] | None = None
        self._media: dict[str, tuple[bytes, str]] = {}
        self.media_deleted: list[str] = []
        self._drop_next = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- life cycle -------------------------------------------------------------------------------

    def start(self) -> FakeTwilio:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self._requested_port), _make_handler(self))
        # Daemon threads: a response held back by hang_next() must not keep the test process alive.
        server.daemon_threads = True
        self._server = server
        # A short poll so stop() returns at once (the default 0.5 s would add up over a test suite).
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-twilio", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in hang_next()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeTwilio is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give the client (``TWILIO_API_BASE_URL``)."""
        return f"http://{self.host}:{self.port}"

    # ----- what it received -------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request, oldest first: method, path, query, form, headers, time, monotonic, status."""
        with self._lock:
            return [dict(r) for r in self._requests]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message created, oldest first, as Twilio's JSON plus the ``status_callback`` it was given."""
        with self._lock:
            return [dict(m) for m in self._messages]

    def message(self, sid: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._find(sid))

    def messages_to(self, to: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["to"] == to]

    def wait_for_messages(self, count: int, *, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` messages exist (for end-to-end tests); raise on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._messages)} of {count} messages after {timeout}s")
                self._changed.wait(left)
            return [dict(m) for m in self._messages]

    def clear(self) -> None:
        """Forget recorded requests and messages and every pending failure."""
        with self._lock:
            self._requests.clear()
            self._messages.clear()
        self.reset()

    # ----- MMS media ---------------------------------------------------------------------------------

    def add_media(self, content: bytes, content_type: str = "image/jpeg") -> str:
        """Store a photo as Twilio would for an inbound MMS; returns the MediaUrl Twilio would post."""
        message_sid = "MM" + uuid.uuid4().hex
        media_sid = "ME" + uuid.uuid4().hex
        with self._lock:
            self._media[media_sid] = (content, content_type)
        return f"https://api.twilio.com/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}/Media/{media_sid}"

    def has_media(self, url: str) -> bool:
        with self._lock:
            return url.rsplit("/", 1)[-1] in self._media

    def _media_request(self, handler: BaseHTTPRequestHandler, route: re.Match[str]) -> None:
        with self._lock:
            authorised = self._authorised(handler.headers.get("Authorization"), route["account"])
            found = self._media.get(route["sid"])
            if authorised and found is not None and handler.command == "DELETE":
                del self._media[route["sid"]]
                self.media_deleted.append(route["sid"])
        if not authorised:
            handler.send_response(401)
            handler.end_headers()
            return
        if found is None:
            handler.send_response(404)
            handler.end_headers()
            return
        if handler.command == "DELETE":
            handler.send_response(204)
            handler.end_headers()
            return
        content, content_type = found
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)

    # ----- failing on demand ------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        code: int | None = None,
        *,
        message: str | None = None,
        create: bool = False,
    ) -> None:
        """Answer the next ``n`` requests (of any kind) with an error.

        ``create=True`` stores a POSTed message before answering the error: Twilio created it but we never
        learnt so (the case that makes a 5xx an unknown outcome).
        """
        failure = _Failure(status, code, message or _default_message(status), create)
        with self._lock:
            self._fail_next.extend([failure] * n)

    def fail_until(
        self,
        deadline: float | None = None,
        *,
        seconds: float | None = None,
        status: int = 500,
        code: int | None = None,
    ) -> None:
        """Fail every request until ``deadline`` (``time.monotonic()``) or for ``seconds`` from now:
        "Twilio is down for a minute". Nothing is created meanwhile."""
        if (deadline is None) == (seconds is None):
            raise ValueError("give exactly one of deadline or seconds")
        until = deadline if deadline is not None else time.monotonic() + float(seconds or 0)
        with self._lock:
            self._fail_until = (until, _Failure(status, code, _default_message(status)))

    def error_for_number(
        self, to: str, status: int = 400, code: int = 21211, message: str | None = None
    ) -> None:
        """Refuse every message to ``to`` with a Twilio error, until ``reset()``."""
        text = message or f"The 'To' number {to} is not valid (fake error {code})."
        with self._lock:
            self._number_errors[to] = _Failure(status, code, text)

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """For the next ``n`` requests: record and act on them (a POST creates the message), then hold the
        answer for ``seconds``. A client with a shorter timeout gives up after its request arrived, like a
        real read timeout."""
        with self._lock:
            self._hang_next.extend([seconds] * n)

    def accept_late(self, seconds: float, n: int | None = None) -> None:
        """Hold each of the next ``n`` message creates (every one while ``n`` is None, until ``reset()``)
        for ``seconds`` *before* acting on it, then create the message and answer, whether or not the client
        is still waiting: a slow API that takes a request the client gave up on. Look-ups made during the
        hold do not find the message yet. (``hang_next`` is the other order: created at once, answered
        late.)"""
        with self._lock:
            self._accept_late = (seconds, n)

    def drop_next(self, n: int = 1) -> None:
        """For the next ``n`` requests: act on them (a POST creates the message), then close the connection
        without answering, as a crashing load balancer would."""
        with self._lock:
            self._drop_next += n

    def reset(self) -> None:
        """Stop failing: cancel fail_next, fail_until, error_for_number, hang_next and drop_next."""
        with self._lock:
            self._fail_next.clear()
            self._fail_until = None
            self._number_errors.clear()
            self._hang_next.clear()
            self._accept_late = None
            self._drop_next = 0

    # ----- Twilio calling us back -------------------------------------------------------------------

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> dict[str, Any]:
        """Change a message's status at "Twilio" without a callback (a lost callback, seen by a look-up)."""
        with self._lock:
            record = self._find(sid)
            record["status"] = status
            record["error_code"] = error_code
            record["error_message"] = f"fake error {error_code}" if error_code is not None else None
            record["date_updated"] = _rfc2822(_now())
            return dict(record)

    def post_status_callback(
        self,
        message_sid: str,
        status: str,
        error_code: int | None = None,
        *,
        auth_token: str | None = None,
        deliver_to: str | None = None,
        timeout: float = 10.0,
    ) -> httpx.Response:
        """Post Twilio's status callback for a message to the StatusCallback URL it was created with.

        Signed like Twilio: ``X-Twilio-Signature`` over that URL and the form, with ``auth_token`` (default:
        the fake's; pass another to forge one). ``deliver_to`` sends it to another address while still
        signing the StatusCallback URL, as Twilio does when a proxy sits in front of the service.
        """
        record = self.set_status(message_sid, status, error_code)
        url = record.get("status_callback")
        if not url:
            raise ValueError(f"message {message_sid} was created without a StatusCallback")
        params = {
            "AccountSid": record["account_sid"],
            "ApiVersion": API_VERSION,
            "From": record["from"],
            "MessageSid": message_sid,
            "MessageStatus": status,
            "SmsSid": message_sid,
            "SmsStatus": status,
            "To": record["to"],
        }
        if error_code is not None:
            # Twilio sends ErrorCode only with failed/undelivered.
            params["ErrorCode"] = str(error_code)
        signature = RequestValidator(auth_token or self.auth_token).compute_signature(url, params)
        return httpx.post(
            deliver_to or url,
            data=params,
            headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
            timeout=timeout,
        )

    # ----- serving (called from handler threads) ----------------------------------------------------

    def _find(self, sid: str) -> dict[str, Any]:
        for record in self._messages:
            if record["sid"] == sid:
                return record
        raise KeyError(sid)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        media = _MEDIA.match(parts.path)
        if media is not None:
            self._media_request(handler, media)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8"), keep_blank_values=True).items()}
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        entry: dict[str, Any] = {
            "method": handler.command,
            "path": parts.path,
            "query": query,
            "form": form,
            "headers": dict(handler.headers.items()),
            "time": time.time(),
            "monotonic": time.monotonic(),
            "client": handler.client_address[0],
            "status": None,
        }
        auth = handler.headers.get("Authorization")
        with self._changed:
            self._requests.append(entry)
            late = self._late_create(handler.command, parts.path)
            hang = self._hang_next.pop(0) if self._hang_next and late is None else None
            drop = self._drop_next > 0 and late is None
            if drop:
                self._drop_next -= 1
            if late is None:
                status, payload = self._answer(
                    handler.command, parts.path, query, form, auth, self._current_failure()
                )
                entry["status"] = None if drop else status
            self._changed.notify_all()
        if late is not None:
            # Nothing is done with the request until the hold ends, and then it is done even if the
            # client has long gone: the message exists from that moment.
            self._stopping.wait(late)
            with self._changed:
                status, payload = self._answer(
                    handler.command, parts.path, query, form, auth, self._current_failure()
                )
                entry["status"] = status
                self._changed.notify_all()

        logger.info(
            "%s %s%s -> %s",
            handler.command,
            parts.path,
            f" To={form['To']}" if "To" in form else "",
            "dropped" if drop else status,
        )
        if self.latency:
            self._stopping.wait(self.latency)
        if hang is not None:
            self._stopping.wait(hang)
        if drop:
            handler.close_connection = True
            return
        body = json.dumps(payload).encode("utf-8")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (hang_next): exactly the case being simulated

    def _late_create(self, method: str, path: str) -> float | None:
        """The hold for this request when it is a message create that accept_late() covers."""
        route = _ROUTE.match(path)
        if self._accept_late is None or method != "POST" or route is None or route["sid"]:
            return None
        seconds, left = self._accept_late
        if left is not None:
            self._accept_late = (seconds, left - 1) if left > 1 else None
        return seconds

    def _current_failure(self) -> _Failure | None:
        if self._fail_until is not None:
            until, failure = self._fail_until
            if time.monotonic() < until:
                return failure
            self._fail_until = None
        if self._fail_next:
            return self._fail_next.pop(0)
        return None

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        form: dict[str, str],
        auth: str | None,
        failure: _Failure | None,
    ) -> tuple[int, dict[str, Any]]:
        route = _ROUTE.match(path)
        if failure is not None:
            if failure.create and route and method == "POST" and not route["sid"] and _valid_create(form):
                self._create(route["account"], form)
            return failure.status, _error(failure.status, failure.code, failure.message)
        if route is None:
            return 404, _error(404, 20404, f"The requested resource {path} was not found")
        if not self._authorised(auth, route["account"]):
            return 401, _error(401, 20003, "Authenticate")
        if method == "POST" and not route["sid"]:
            return self._create_answer(route["account"], form)
        if method == "GET" and not route["sid"]:
            return 200, self._list_page(route["account"], query)
        if method == "GET":
            try:
                return 200, _public(self._find(route["sid"]))
            except KeyError:
                return 404, _error(404, 20404, f"The requested resource {path} was not found")
        return 405, _error(405, 20004, "Method not allowed")

    def _authorised(self, header: str | None, path_account: str) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if user != self.account_sid or path_account != self.account_sid:
            return False
        return not self.check_auth_token or password == self.auth_token

    def _create_answer(self, account: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if not form.get("To"):
            return 400, _error(400, 21604, "A 'To' phone number is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return 400, _error(400, 21603, "A 'From' phone number is required.")
        if not form.get("Body") and not form.get("MediaUrl"):
            return 400, _error(400, 21602, "Message body is required.")
        number_error = self._number_errors.get(form["To"])
        if number_error is not None:
            return number_error.status, _error(number_error.status, number_error.code, number_error.message)
        return 201, _public(self._create(account, form))

    def _create(self, account: str, form: dict[str, str]) -> dict[str, Any]:
        now = _now()
        sid = "SM" + uuid.uuid4().hex
        uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json"
        body = form.get("Body", "")
        record: dict[str, Any] = {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": body,
            "date_created": _rfc2822(now),
            "date_sent": _rfc2822(now),
            "date_updated": _rfc2822(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": str(num_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {
                "media": uri.replace(".json", "/Media.json"),
                "feedback": uri.replace(".json", "/Feedback.json"),
            },
            "to": form.get("To"),
            "uri": uri,
            # Not part of Twilio's JSON (see _public); kept for post_status_callback and assertions.
            "status_callback": form.get("StatusCallback"),
            "received_at": time.time(),  # when it arrived, to the microsecond: for the benchmarks
        }
        self._messages.append(record)
        self._changed.notify_all()
        return record

    def _list_page(self, account: str, query: dict[str, str]) -> dict[str, Any]:
        found = [m for m in self._messages if m["account_sid"] == account and _matches(m, query)]
        found.reverse()  # newest first, as Twilio lists them
        page_size = max(1, min(int(query.get("PageSize") or 50), 1000))
        page = max(0, int(query.get("Page") or 0))
        start = page * page_size
        chunk = found[start : start + page_size]
        filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}
        base = f"/{API_VERSION}/Accounts/{account}/Messages.json"

        def page_uri(number: int) -> str:
            return base + "?" + urlencode({**filters, "PageSize": page_size, "Page": number})

        return {
            "messages": [_public(m) for m in chunk],
            "end": start + max(len(chunk) - 1, 0),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if start + page_size < len(found) else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": page_uri(page),
        }


def _now() -> datetime:
    # Whole seconds: Twilio's RFC 2822 dates carry no fraction, and filters compare at that precision.
    return datetime.now(UTC).replace(microsecond=0)


def _default_message(status: int) -> str:
    if status == 429:
        return "Too Many Requests"
    if status >= 500:
        return "Internal Server Error (fake outage)"
    return "Bad Request"


def _error(status: int, code: int | None, message: str) -> dict[str, Any]:
    """Twilio's legacy error document, which twilio-python turns into TwilioRestException."""
    return {
        "code": code if code is not None else status,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code if code is not None else status}",
        "status": status,
    }


def _valid_create(form: dict[str, str]) -> bool:
    return bool(form.get("To") and (form.get("From") or form.get("MessagingServiceSid")) and form.get("Body"))


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _PRIVATE}


_PRIVATE = frozenset({"status_callback", "received_at"})


def _matches(record: dict[str, Any], query: dict[str, str]) -> bool:
    if "To" in query and record["to"] != query["To"]:
        return False
    if "From" in query and record["from"] != query["From"]:
        return False
    date_filters = [(key, query[key]) for key in ("DateSent", "DateSent<", "DateSent>") if key in query]
    if not date_filters:
        return True
    # A message still in Twilio's queue has no date_sent and matches no DateSent filter.
    if not record.get("date_sent"):
        return False
    sent = parsedate_to_datetime(record["date_sent"])
    for key, value in date_filters:
        moment, whole_day = _parse_date_filter(value)
        end = moment + timedelta(days=1) if whole_day else moment + timedelta(seconds=1)
        if key == "DateSent" and not (moment <= sent < end):
            return False
        if key == "DateSent>" and sent < moment:
            return False
        if key == "DateSent<" and sent >= end:
            return False
    return True


class _Server(ThreadingHTTPServer):
    # Dozens of worker threads connect at once in a burst; the default backlog of 5 would refuse some.
    request_queue_size = 256


def _make_handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeTwilio/1.0"

        def do_GET(self) -> None:  # the names http.server dispatches to
            fake._handle(self)

        def do_POST(self) -> None:
            fake._handle(self)

        def do_DELETE(self) -> None:
            fake._handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # _handle logs one line per request, without bodies

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake Twilio Messages API until interrupted.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    fake = FakeTwilio(
        host=args.host, port=args.port, account_sid=args.account_sid, auth_token=args.auth_token
    )
    with fake:
        print(f"fake Twilio listening on {fake.url}", flush=True)
        print(
            f"TWILIO_API_BASE_URL={fake.url} TWILIO_ACCOUNT_SID={fake.account_sid} "
            f"TWILIO_AUTH_TOKEN={fake.auth_token}",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
