"""Inbound patient messages: Twilio SMS/MMS and inbound email (Mailgun's signed route post).

Both are signed; a forged post gets 403 and stores nothing. Both are idempotent: a provider retry of the
same message gets the same answer and stores nothing new.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime
from email.utils import parseaddr
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import Response
from twilio.twiml.messaging_response import MessagingResponse

from service import replies
from service.api.deps import NowDep, SessionDep, SettingsDep
from service.api.webhooks import TwilioForm
from service.contact import InvalidPhone, parse_phone
from service.core.triage import Lexicon
from service.email_reply import new_text
from service.triage_rules import load_lexicon

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])

LexiconDep = Annotated[Lexicon, Depends(load_lexicon)]
# Mailgun's signature carries its own timestamp; an older one is a replay.
MAX_SIGNATURE_AGE_SECONDS = 15 * 60


def _twiml(reply: str | None) -> Response:
    response = MessagingResponse()
    if reply:
        response.message(reply)
    return Response(str(response), media_type="application/xml")


def _media(form: dict[str, str]) -> list[dict[str, str]]:
    """MMS photos: the URL and content type of each, kept for staff (Twilio holds the file)."""
    try:
        count = int(form.get("NumMedia", "0") or 0)
    except ValueError:
        count = 0
    return [
        {"url": form[f"MediaUrl{n}"], "content_type": form.get(f"MediaContentType{n}", "")}
        for n in range(min(count, 10))
        if form.get(f"MediaUrl{n}")
    ]


@router.post("/twilio/sms")
def twilio_sms(form: TwilioForm, session: SessionDep, now: NowDep, lexicon: LexiconDep) -> Response:
    """An SMS or MMS from a patient. Answered with TwiML at once; the reply is stored with its triage."""
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    sender, recipient = form.get("From", ""), form.get("To", "")
    if not sid or not sender or not recipient:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "MessageSid, From and To are required")
    body = form.get("Body", "")
    received = replies.receive(
        session,
        replies.Inbound(
            channel="sms", provider_id=sid, sender=_e164(sender), recipient=_e164(recipient),
            body=body, new_text=body, media=_media(form),
        ),
        now=now,
        lexicon=lexicon,
    )  # fmt: skip
    session.commit()
    log.info(
        "sms %s: severity %s, keyword %s%s", received.message.id, received.message.severity,
        received.message.keyword, " (duplicate)" if received.duplicate else "",
    )  # fmt: skip
    return _twiml(received.reply)


def _e164(number: str) -> str:
    try:
        return parse_phone(number, region="US")
    except InvalidPhone:
        return number  # a short code or alphanumeric sender: kept as it came


def verify_mailgun(*, key: str, timestamp: str, token: str, signature: str, now: datetime) -> bool:
    """Mailgun signs HMAC-SHA256(key, timestamp + token) in hex; old timestamps are refused as replays."""
    if not (key and timestamp.isdigit() and token and signature):
        return False
    if abs(now.timestamp() - int(timestamp)) > MAX_SIGNATURE_AGE_SECONDS:
        return False
    expected = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def _headers(form: dict[str, str]) -> dict[str, str]:
    """Mailgun sends the original headers as a JSON list of [name, value] pairs."""
    try:
        pairs = json.loads(form.get("message-headers", "[]"))
        return {str(name).lower(): str(value) for name, value in pairs}
    except (ValueError, TypeError):
        return {}


def _is_automatic(headers: dict[str, str]) -> bool:
    """Out-of-office and other robots (RFC 3834): never answered, so two robots cannot talk forever."""
    if headers.get("auto-submitted", "no").lower() != "no":
        return True
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return True
    return headers.get("precedence", "").lower() in ("auto_reply", "bulk", "junk", "list")


@router.post("/email/inbound")
async def email_inbound(
    request: Request, session: SessionDep, now: NowDep, settings: SettingsDep, lexicon: LexiconDep
) -> dict[str, object]:
    """A patient's email, as Mailgun's route "forward" action posts it (form fields ``sender``,
    ``recipient``, ``body-plain``, ``message-headers``, ``Message-Id``, ``timestamp``, ``token``,
    ``signature``). The quoted history is stripped before triage."""
    form = {key: str(value) for key, value in (await request.form()).items()}
    if not settings.INBOUND_EMAIL_SECRET:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "inbound email is not configured (INBOUND_EMAIL_SECRET)"
        )
    if not verify_mailgun(
        key=settings.INBOUND_EMAIL_SECRET, timestamp=form.get("timestamp", ""), token=form.get("token", ""),
        signature=form.get("signature", ""), now=now,
    ):  # fmt: skip
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "bad or stale signature; check INBOUND_EMAIL_SECRET is Mailgun's signing key",
        )
    headers = _headers(form)
    sender = parseaddr(form.get("from") or form.get("sender", ""))[1] or form.get("sender", "")
    recipient = parseaddr(form.get("recipient", ""))[1] or form.get("recipient", "")
    message_id = form.get("Message-Id") or headers.get("message-id") or f"mailgun-{form.get('token')}"
    if not sender or not recipient:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "sender and recipient are required")
    body = form.get("body-plain", "")
    received = replies.receive(
        session,
        replies.Inbound(
            channel="email", provider_id=message_id, sender=sender, recipient=recipient, body=body,
            new_text=new_text(body), automatic=_is_automatic(headers),
        ),
        now=now,
        lexicon=lexicon,
    )  # fmt: skip
    session.commit()
    message = received.message
    return {"id": message.id, "severity": message.severity, "duplicate": received.duplicate}
