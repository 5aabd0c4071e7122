"""Provider webhooks: Twilio's inbound SMS and delivery statuses, Mailgun's inbound email.

Every post is signed; a forged one gets 403 and changes nothing. Every post is idempotent: a provider's
retry gets the same answer and stores nothing new. The routes only check the signature, let the channel
turn the post into a plain value, and hand it to the use case.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from sqlmodel import Session

from service.api.deps import NowDep, SessionDep, SettingsDep, get_purposes
from service.api.errors import responses
from service.channels import mailgun
from service.channels.base import InboundMessage
from service.channels.twilio import webhooks as twilio
from service.outbox.purpose import Purposes
from service.replies import replay, unrouted
from service.replies.arrive import Arrived, arrive, clinic_for
from service.sending.delivery import apply_update

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
    posted = await request.form()
    url = settings.PUBLIC_BASE_URL.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature", "")
    # The form as posted (a repeated key keeps every value: Twilio signs them all).
    if not twilio.signature_is_valid(
        auth_token=settings.TWILIO_AUTH_TOKEN, url=url, form=posted, signature=signature
    ):
        log.warning("refused a Twilio webhook with a bad signature for %s", request.url.path)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "bad X-Twilio-Signature; check TWILIO_AUTH_TOKEN, and that PUBLIC_BASE_URL is the URL "
            "Twilio calls",
        )
    return {key: str(value) for key, value in posted.items()}


TwilioForm = Annotated[dict[str, str], Depends(twilio_form)]


@router.post("/twilio/sms", responses=responses(400, 403, 413))
def twilio_sms(form: TwilioForm, session: SessionDep, now: NowDep) -> Response:
    """An SMS or MMS from a patient or a staff member: stored once, a bare STOP or START applied, and
    answered with empty TwiML at once. The inbound worker does the rest; our answer goes through the
    outbox."""
    try:
        inbound = twilio.inbound_message(form)
    except twilio.MalformedPost as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    _store(session, inbound, now=now)
    return Response(twilio.twiml(None), media_type="application/xml")


def _store(session: Session, inbound: InboundMessage, *, now: datetime) -> Arrived:
    """Store the message for its clinic (or, for a number or address no clinic has, for the operator)."""
    clinic = clinic_for(session, inbound)
    if clinic is None:
        unrouted.store(session, inbound, now=now)
        session.commit()
        log.info("an inbound %s for no clinic of ours was kept for the operator", inbound.channel)
        return Arrived(None)
    arrived = arrive(session, clinic, inbound, now=now)
    session.commit()
    if arrived.message is not None:
        log.info(
            "%s %s stored%s", inbound.channel, arrived.message.id, " (duplicate)" if arrived.duplicate else ""
        )
    return arrived


@router.post(
    "/twilio/status",
    responses={
        200: {
            "description": "Recorded (or not ours)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **responses(400, 403, 413),
    },
)
def twilio_status(
    form: TwilioForm,
    session: SessionDep,
    now: NowDep,
    purposes: Annotated[Purposes, Depends(get_purposes)],
    message_id: int | None = None,
) -> PlainTextResponse:
    """Delivery status of an SMS we sent. Answers 200 even for messages we do not know, so Twilio stops
    retrying something we can never use."""
    try:
        update = twilio.delivery_update(form, message_id=message_id)
    except twilio.MalformedPost as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    outcome = apply_update(session, update, now=now, purposes=purposes)
    session.commit()
    log.info("status callback for message %s: %s", message_id, outcome)
    return PlainTextResponse("", status_code=200)


@router.post("/email/inbound", responses=responses(400, 403, 413))
@router.post("/email/inbound/mime", responses=responses(400, 403, 413))
async def email_inbound(
    request: Request, session: SessionDep, now: NowDep, settings: SettingsDep
) -> dict[str, object]:
    """A patient's email, as Mailgun's route posts it (parsed, or raw MIME for a route ending in "mime"):
    stored once and answered at once. The inbound worker proves the sender, strips the quoted history,
    triages and answers."""
    form = {key: str(value) for key, value in (await request.form()).items()}
    if not settings.INBOUND_EMAIL_SECRET:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "inbound email is not configured (INBOUND_EMAIL_SECRET)"
        )
    if not mailgun.signature_is_valid(key=settings.INBOUND_EMAIL_SECRET, form=form, now=now):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "bad or stale signature; check INBOUND_EMAIL_SECRET is Mailgun's signing key",
        )
    # Parsing a MIME message and the database work run on a worker thread: the event loop keeps
    # answering every other request meanwhile, whatever the email holds.
    return await run_in_threadpool(_take_email, session, form, now)


def _take_email(session: Session, form: dict[str, str], now: datetime) -> dict[str, object]:
    if not replay.first_use(session, "mailgun", form.get("token", ""), now=now):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "this signature was already used; Mailgun signs every post anew"
        )
    try:
        inbound = mailgun.inbound_message(form)
    except mailgun.MalformedPost as exc:
        session.rollback()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    arrived = _store(session, inbound, now=now)
    if arrived.message is None:
        return {"stored": True, "routed": False, "reason": "not addressed to a clinic of ours"}
    return {"stored": True, "routed": True, "id": arrived.message.id, "duplicate": arrived.duplicate}
