"""Inbound email as Mailgun's route "forward" action posts it: the signature check and the parse.

Mailgun signs HMAC-SHA256(signing key, timestamp + token) in hex. The form carries ``sender``,
``recipient``, ``from``, ``body-plain``, ``message-headers`` (a JSON list of [name, value] pairs),
``Message-Id``, ``timestamp``, ``token`` and ``signature``.
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
    try:
        pairs = json.loads(form.get("message-headers", "[]"))
        return {str(name).lower(): str(value) for name, value in pairs}
    except (ValueError, TypeError):
        return {}


def is_automatic(headers: Mapping[str, str]) -> bool:
    """Out-of-office and other robots (RFC 3834): never answered, so two robots cannot talk forever."""
    if headers.get("auto-submitted", "no").lower() != "no":
        return True
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return True
    return headers.get("precedence", "").lower() in ("auto_reply", "bulk", "junk", "list")


def inbound_message(form: Mapping[str, str]) -> InboundMessage:
    headers = _headers(form)
    sender = parseaddr(form.get("from") or form.get("sender", ""))[1] or form.get("sender", "")
    recipient = parseaddr(form.get("recipient", ""))[1] or form.get("recipient", "")
    if not sender or not recipient:
        raise MalformedPost("sender and recipient are required")
    message_id = form.get("Message-Id") or headers.get("message-id") or f"mailgun-{form.get('token')}"
    body = form.get("body-plain", "")
    return InboundMessage(
        channel=Channel.EMAIL,
        provider_id=message_id,
        sender=sender,
        recipient=recipient,
        body=body,
        new_text=new_text(body),
        automatic=is_automatic(headers),
    )
