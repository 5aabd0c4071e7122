"""Inbound email as Mailgun's route "forward" action posts it: the signature check and the parse.

Mailgun signs HMAC-SHA256(signing key, timestamp + token) in hex. The form carries ``sender``,
``recipient``, ``from``, ``body-plain``, ``message-headers`` (a JSON list of [name, value] pairs),
``Message-Id``, ``timestamp``, ``token`` and ``signature``, and its checks of the sender
(``X-Mailgun-Spf``, ``X-Mailgun-Dkim-Check-Result``). A signature is valid once: ``token`` is remembered
for the replay window (``service.replies.replay``), so a captured post cannot be sent again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from email.utils import parseaddr

from service.channels.base import InboundMessage
from service.channels.email_text import new_text
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


def _headers(form: Mapping[str, str]) -> dict[str, str]:
    """The original headers, from a JSON list of [name, value] pairs; anything else (a nested structure
    deep enough to exhaust the parser, pairs that are not pairs) counts as no headers."""
    try:
        pairs = json.loads(form.get("message-headers", "[]"))
    except (ValueError, RecursionError):
        return {}
    if not isinstance(pairs, list):
        return {}
    return {
        str(pair[0]).lower()[:200]: str(pair[1])[:2000]
        for pair in pairs
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
    }


def _passed(value: str | None) -> bool:
    return (value or "").strip().lower().startswith("pass")


def sender_verified(form: Mapping[str, str], headers: Mapping[str, str]) -> bool:
    """Mailgun checked the sender: SPF or DKIM passed (its X-Mailgun-Spf and X-Mailgun-Dkim-Check-Result,
    posted as fields and among the headers)."""
    spf = form.get("X-Mailgun-Spf") or headers.get("x-mailgun-spf")
    dkim = form.get("X-Mailgun-Dkim-Check-Result") or headers.get("x-mailgun-dkim-check-result")
    return _passed(spf) or _passed(dkim)


def is_automatic(headers: Mapping[str, str]) -> bool:
    """Out-of-office and other robots (RFC 3834): never answered, so two robots cannot talk forever."""
    if headers.get("auto-submitted", "no").lower() != "no":
        return True
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return True
    return headers.get("precedence", "").lower() in ("auto_reply", "bulk", "junk", "list")


def inbound_message(form: Mapping[str, str]) -> InboundMessage:
    headers = _headers(form)
    # The envelope sender (what the sending server said in MAIL FROM, which SPF checks), never the From
    # header, which anyone writes as they like.
    sender = parseaddr(form.get("sender", ""))[1] or form.get("sender", "")
    recipient = parseaddr(form.get("recipient", ""))[1] or form.get("recipient", "")
    if not sender or not recipient:
        raise MalformedPost("sender and recipient are required")
    message_id = (form.get("Message-Id") or headers.get("message-id") or f"mailgun-{form.get('token')}")[:500]
    body = form.get("body-plain", "")
    return InboundMessage(
        channel=Channel.EMAIL,
        provider_id=message_id,
        sender=sender,
        recipient=recipient,
        body=body,
        new_text=new_text(body),
        automatic=is_automatic(headers),
        sender_verified=sender_verified(form, headers),
    )
