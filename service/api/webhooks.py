"""Provider webhooks: Twilio's inbound SMS and delivery statuses, Mailgun's inbound email.

Every post is signed; a forged one gets 403 and changes nothing. Every post is idempotent: a provider's
retry gets the same answer and stores nothing new. The routes only check the signature, let the channel
turn the post into a plain value, and hand it to the use case.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import PlainTextResponse, Response

from service.api.deps import NowDep, SessionDep, SettingsDep, get_purposes
from service.api.errors import responses
from service.channels import mailgun
from service.channels.twilio import webhooks as twilio
from service.outbox.purpose import Purposes
from service.replies import replay
from service.replies.receive import receive
from service.sending.delivery import apply_update
from service.triage import Lexicon
from service.triage.loader import load_lexicon

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def _lexicon() -> Lexicon:
    # A function of no arguments: load_lexicon's own `directory` must never become a query parameter.
    return load_lexicon()


LexiconDep = Annotated[Lexicon, Depends(_lexicon)]


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
    if not twilio.signature_is_valid(
        auth_token=settings.TWILIO_AUTH_TOKEN, url=url, form=form, signature=signature
    ):
        log.warning("refused a Twilio webhook with a bad signature for %s", request.url.path)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "bad X-Twilio-Signature; check TWILIO_AUTH_TOKEN, and that PUBLIC_BASE_URL is the URL "
            "Twilio calls",
        )
    return form


TwilioForm = Annotated[dict[str, str], Depends(twilio_form)]


@router.post("/twilio/sms", responses=responses(400, 403, 413))
def twilio_sms(form: TwilioForm, session: SessionDep, now: NowDep, lexicon: LexiconDep) -> Response:
    """An SMS or MMS from a patient. Answered with TwiML at once; the reply is stored with its triage."""
    try:
        inbound = twilio.inbound_message(form)
    except twilio.MalformedPost as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    received = receive(session, inbound, now=now, lexicon=lexicon)
    session.commit()
    if received.message is not None:
        log.info(
            "sms %s: severity %s, keyword %s%s", received.message.id, received.message.severity,
            received.message.keyword, " (duplicate)" if received.duplicate else "",
        )  # fmt: skip
    return Response(twilio.twiml(received.reply), media_type="application/xml")


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
async def email_inbound(
    request: Request, session: SessionDep, now: NowDep, settings: SettingsDep, lexicon: LexiconDep
) -> dict[str, object]:
    """A patient's email, as Mailgun's route "forward" action posts it. The quoted history is stripped
    before triage."""
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
    if not replay.first_use(session, "mailgun", form.get("token", ""), now=now):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "this signature was already used; Mailgun signs every post anew"
        )
    try:
        inbound = mailgun.inbound_message(form)
    except mailgun.MalformedPost as exc:
        session.rollback()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    received = receive(session, inbound, now=now, lexicon=lexicon)
    session.commit()
    message = received.message
    if message is None:
        return {"stored": False, "reason": "not addressed to a clinic of ours"}
    return {"id": message.id, "severity": message.severity, "duplicate": received.duplicate}
