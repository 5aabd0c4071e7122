"""What Twilio posts to us: the signature check, inbound SMS/MMS, delivery statuses, and TwiML answers.

Each post becomes a plain value (``InboundMessage``, ``DeliveryUpdate``); the routes above never see a
Twilio field name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from service.channels.base import DeliveryUpdate, InboundMessage
from service.channels.text import clean
from service.channels.twilio.codes import STATUSES, problem_for
from service.core.enums import Channel, MessageStatus
from service.core.phones import InvalidPhone, parse_phone

# Twilio lets an MMS carry up to 10 media items.
MAX_MEDIA = 10


class MalformedPost(ValueError):
    """A signed post without the fields every such post has: answered 400, stored nowhere."""


def signature_is_valid(*, auth_token: str, url: str, form: Mapping[str, Any], signature: str) -> bool:
    """Twilio signs the URL it called plus the sorted form fields (HMAC-SHA1 with the auth token).

    ``url`` must be exactly the public URL Twilio called: behind a proxy, the https one, not the one this
    process sees. ``form`` as posted: a multi-dict (with ``getlist``) keeps a repeated key's every value,
    which Twilio signs each of, as twilio-python's RequestValidator reads them.
    """
    return bool(auth_token) and RequestValidator(auth_token).validate(url, form, signature)


def signature(*, auth_token: str, url: str, form: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for this post (for `aftercare simulate-sms` and tests)."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(form)))


def _e164(number: str) -> str:
    try:
        return parse_phone(number, region="US")
    except InvalidPhone:
        return number  # a short code or alphanumeric sender: kept as it came


def _media(form: Mapping[str, str]) -> list[dict[str, str]]:
    """MMS photos: the URL and content type of each."""
    try:
        count = int(form.get("NumMedia", "0") or 0)
    except ValueError:
        count = 0
    return [
        {"url": clean(form[f"MediaUrl{n}"]), "content_type": clean(form.get(f"MediaContentType{n}", ""))}
        for n in range(min(max(count, 0), MAX_MEDIA))
        if form.get(f"MediaUrl{n}")
    ]


def inbound_message(form: Mapping[str, str]) -> InboundMessage:
    sid = clean(form.get("MessageSid") or form.get("SmsSid") or "")[:64]
    sender, recipient = clean(form.get("From", ""))[:64], clean(form.get("To", ""))[:64]
    if not sid or not sender or not recipient:
        raise MalformedPost("MessageSid, From and To are required")
    body = clean(form.get("Body", ""))
    return InboundMessage(
        channel=Channel.SMS,
        provider_id=sid,
        sender=_e164(sender),
        recipient=_e164(recipient),
        body=body,
        new_text=body,
        media=_media(form),
    )


def delivery_update(form: Mapping[str, str], *, message_id: int | None) -> DeliveryUpdate:
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    provider_status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    if not sid or not provider_status:
        raise MalformedPost("MessageSid and MessageStatus are required")
    status = STATUSES.get(provider_status)
    code = form.get("ErrorCode") or None
    failed = status in (MessageStatus.UNDELIVERED, MessageStatus.FAILED)
    return DeliveryUpdate(
        message_id=message_id,
        provider_id=sid,
        status=status,
        problem=problem_for(code) if failed else None,
        detail=f"the carrier reported {provider_status} (code {code or 'none'})" if failed else None,
        code=code,
    )


def twiml(reply: str | None) -> str:
    """The TwiML answer to an inbound SMS: our reply, or nothing (an empty <Response/>)."""
    response = MessagingResponse()
    if reply:
        response.message(reply)
    return str(response)
