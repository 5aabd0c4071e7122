"""Provider webhooks. Every post is signed; a forged one gets 403 and changes nothing."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import PlainTextResponse
from twilio.request_validator import RequestValidator

from service import delivery
from service.api.deps import NowDep, SessionDep, SettingsDep

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def twilio_form(request: Request, settings: SettingsDep) -> dict[str, str]:
    """The form Twilio posted, after checking X-Twilio-Signature against our public URL.

    Twilio signs the URL it called; behind a proxy that is the public https URL, not the one this process
    sees, so the URL is rebuilt from PUBLIC_BASE_URL.
    """
    if not settings.TWILIO_AUTH_TOKEN:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "Twilio is not configured here (TWILIO_AUTH_TOKEN is unset)"
        )
    form = {key: str(value) for key, value in (await request.form()).items()}
    url = settings.PUBLIC_BASE_URL.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature", "")
    if not RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(url, form, signature):
        log.warning("refused a Twilio webhook with a bad signature for %s", request.url.path)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "bad X-Twilio-Signature; check TWILIO_AUTH_TOKEN, and that PUBLIC_BASE_URL is the URL "
            "Twilio calls",
        )
    return form


TwilioForm = Annotated[dict[str, str], Depends(twilio_form)]


@router.post("/twilio/status", response_class=PlainTextResponse)
def twilio_status(
    form: TwilioForm, session: SessionDep, now: NowDep, message_id: int | None = None
) -> PlainTextResponse:
    """Delivery status of an SMS we sent. Answers 200 even for messages we do not know, so Twilio stops
    retrying something we can never use."""
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    provider_status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if not sid or not provider_status:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "MessageSid and MessageStatus are required")
    outcome = delivery.apply_status(
        session,
        message_id=message_id,
        provider_id=sid,
        provider_status=provider_status,
        error_code=form.get("ErrorCode") or None,
        now=now,
    )
    session.commit()
    log.info("status callback for message %s: %s", message_id, outcome)
    return PlainTextResponse("", status_code=200)
