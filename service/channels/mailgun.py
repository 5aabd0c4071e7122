"""Inbound email as Mailgun's route "forward" action posts it: the signature check and the parse.

Mailgun signs HMAC-SHA256(signing key, timestamp + token) in hex. The parsed route's form carries
``sender``, ``recipient``, ``from``, ``body-plain``, ``message-headers`` (a JSON list of [name, value]
pairs, Mailgun's own headers first), ``Message-Id``, ``timestamp``, ``token`` and ``signature``; a route
forwarding to a URL ending in "mime" posts ``body-mime``, the whole message, instead of the body and the
headers. A signature is valid once: ``token`` is remembered for the replay window
(``service.replies.replay``), so a captured post cannot be sent again. Who sent the email is proven by the
inbound worker (``service.channels.sender_trust``), never believed from a header here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser

from service.channels.base import InboundMessage
from service.channels.text import clean
from service.core.enums import Channel

# Mailgun's signature carries its own timestamp; an older one is a replay.
MAX_SIGNATURE_AGE_SECONDS = 15 * 60


class MalformedPost(ValueError):
    """A signed post without a sender or recipient: answered 400, stored nowhere."""


def signature_is_valid(*, key: str, form: Mapping[str, str], now: datetime) -> bool:
    timestamp, token, signature = form.get("timestamp", ""), form.get("token", ""), form.get("signature", "")
    if not (key and timestamp.isdigit() and token and signature):
        return False
    if abs(now.timestamp() - int(timestamp)) > MAX_SIGNATURE_AGE_SECONDS:
        return False
    expected = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


# Bounds on what a post may make us hold: headers (a real message has a few dozen) and their length.
MAX_HEADERS = 200
MAX_HEADER_LENGTH = 2000


def _listed_headers(form: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The parsed route's headers, in order, from a JSON list of [name, value] pairs; anything else (a
    nested structure deep enough to exhaust the parser, pairs that are not pairs) counts as no headers."""
    try:
        pairs = json.loads(form.get("message-headers", "[]"))
    except (ValueError, RecursionError):
        return ()
    if not isinstance(pairs, list):
        return ()
    return tuple(
        (clean(pair[0])[:200], clean(pair[1])[:MAX_HEADER_LENGTH])
        for pair in pairs[:MAX_HEADERS]
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
    )


def header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """The topmost value of a header (the one added last, by the nearest server)."""
    name = name.lower()
    return next((value for key, value in headers if key.lower() == name), None)


def is_automatic(headers: Sequence[tuple[str, str]]) -> bool:
    """Out-of-office, list mail and other robots (RFC 3834): never answered, so two robots cannot talk
    for ever — but still read."""
    if (header(headers, "auto-submitted") or "no").strip().lower() != "no":
        return True
    if header(headers, "x-autoreply") is not None or header(headers, "x-autorespond") is not None:
        return True
    return (header(headers, "precedence") or "").strip().lower() in ("auto_reply", "bulk", "junk", "list")


class _Text(HTMLParser):
    """The text of an HTML-only email (linear: the parser reads each character once)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in ("br", "p", "div", "li", "tr", "blockquote"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def _from_mime(raw: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The plain text and the headers (in order) of a MIME message as Mailgun's "mime" route posts it."""
    message = message_from_bytes(raw, policy=policy.default)
    headers = tuple(
        (clean(str(name))[:200], clean(str(value))[:MAX_HEADER_LENGTH])
        for name, value in list(message.items())[:MAX_HEADERS]
    )
    body = ""
    if isinstance(message, EmailMessage):
        try:
            part = message.get_body(preferencelist=("plain", "html"))
            if part is not None:
                content = part.get_content()
                body = content if part.get_content_subtype() == "plain" else _html_text(content)
        except (LookupError, ValueError, AssertionError):  # an unknown charset, a broken part
            body = ""
    return clean(str(body)), headers


def inbound_message(form: Mapping[str, str]) -> InboundMessage:
    """A post of either route: parsed ("forward": body-plain and message-headers) or raw ("forward" to a
    URL ending in "mime": body-mime, the whole message, which the inbound worker checks DKIM on). No DNS
    and no reading of the text here: the webhook only stores."""
    # The envelope sender (what the sending server said in MAIL FROM, which SPF checks), never the From
    # header, which anyone writes as they like.
    sender = clean(parseaddr(form.get("sender", ""))[1] or form.get("sender", ""))[:320]
    recipient = clean(parseaddr(form.get("recipient", ""))[1] or form.get("recipient", ""))[:320]
    if not sender or not recipient:
        raise MalformedPost("sender and recipient are required")
    mime = form.get("body-mime")
    raw: bytes | None = None
    if mime:
        raw = mime.encode("utf-8", "surrogateescape")
        body, headers = _from_mime(raw)
    else:
        body, headers = clean(form.get("body-plain", "")), _listed_headers(form)
    found = getaddresses([header(headers, "from") or form.get("from", "")])
    from_address = clean(found[0][1])[:320] if len(found) == 1 else ""
    message_id = clean(
        form.get("Message-Id") or header(headers, "message-id") or f"mailgun-{form.get('token')}"
    )[:500]
    return InboundMessage(
        channel=Channel.EMAIL,
        provider_id=message_id,
        sender=sender,
        recipient=recipient,
        body=body,
        new_text="",  # the inbound worker finds the new words (service/channels/email_text.py)
        automatic=is_automatic(headers),
        sender_verified=False,  # proven, or not, by the inbound worker (service/channels/sender_trust.py)
        raw=raw,
        headers=headers,
        from_address=from_address,
    )
