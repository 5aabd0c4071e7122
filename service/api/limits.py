"""What a request may cost us before anything reads it: a cap on the body by route, and, for the JSON API,
the API key checked before a byte of the body is read.

An oversized post is answered 413 from its Content-Length alone, or as soon as the bytes that arrived pass
the cap — the web process never holds more than the cap of any one request — so a 300 MB post to a webhook
costs nothing but the refusal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from anyio import to_thread
from sqlmodel import Session

from service.clinics import clinic_for_api_key
from service.db import get_engine

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)

KB = 1024
# Path prefix → the largest body it takes. Twilio posts a few KB; an email with its headers a few MB
# (photos come by URL, not in the post); API calls and dashboard forms well under 256 KB.
BODY_LIMITS: Sequence[tuple[str, int]] = (
    ("/webhooks/twilio/", 64 * KB),
    ("/webhooks/email/", 5 * KB * KB),
    ("/api/", 256 * KB),
    ("/dashboard/", 256 * KB),
    ("/unsubscribe/", 16 * KB),
)
DEFAULT_LIMIT = 64 * KB


def limit_for(path: str) -> int:
    return next((limit for prefix, limit in BODY_LIMITS if path.startswith(prefix)), DEFAULT_LIMIT)


async def _answer(send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse a body over its route's cap with 413, reading at most the cap."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"])
        too_large = f"the body is larger than this endpoint takes ({limit // KB} KB)"
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    await _answer(send, 413, too_large)
                    return
            except ValueError:
                await _answer(send, 400, "the Content-Length header is not a number")
                return
        # Read the body here, up to the cap, and hand it on whole: nothing downstream can read more.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ApiKeyFirst:
    """The JSON API answers 401 to a request without a known key before its body is read at all."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", ())).get(b"authorization", b"").decode("latin-1")
        scheme, _, key = header.partition(" ")
        challenge = [(b"www-authenticate", b"Bearer")]
        if scheme.lower() != "bearer" or not key.strip() or len(key) > 200:
            await _answer(
                send, 401,
                "send the clinic's API key as 'Authorization: Bearer <key>' (from `aftercare clinic create`)",
                challenge,
            )  # fmt: skip
            return
        if not await to_thread.run_sync(_known_key, key.strip()):
            await _answer(
                send, 401,
                "this API key is not known or was revoked; check it, or make a new one with "
                "`aftercare clinic rotate-key`",
                challenge,
            )  # fmt: skip
            return
        await self.app(scope, receive, send)


def _known_key(key: str) -> bool:
    with Session(get_engine()) as session:
        return clinic_for_api_key(session, key) is not None


class QuietFailures:
    """An exception no route handled is answered 500 with a plain sentence and logged with its type and
    the path only — never its message or traceback, which may quote request values (a phone in a
    database error's DETAIL, a patient's words)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error("unexpected %s on %s %s", type(exc).__name__, scope.get("method"), scope.get("path"))
            if started:
                return  # the answer was under way: nothing more can be said
            detail = "an unexpected error; nothing was changed. Try again, and report it if it persists"
            body = json.dumps({"detail": detail}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
