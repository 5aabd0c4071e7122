"""Email unsubscribe (RFC 8058). A GET shows a confirmation page and changes nothing — mail scanners fetch
every link in an email, and must not switch off a patient's warnings — the page's button POSTs, and so
does a mail client's one-click unsubscribe (``List-Unsubscribe=One-Click``); only a POST acts."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, status
from fastapi.responses import HTMLResponse

from service.api.deps import NowDep, SessionDep, SettingsDep
from service.patients.consent import patient_for_link, unsubscribe_email
from service.patients.links import LinkExpired

router = APIRouter(tags=["unsubscribe"])

_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<body style="font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">
<h1>{title}</h1>{body}</body></html>"""
_SAFETY = (
    "<p>If you have pus, fever, spreading redness or trouble breathing, please call your clinic or "
    "emergency services.</p>"
)


def _page(title: str, body: str, code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=title, body=body), status_code=code, headers={"Cache-Control": "no-store"}
    )


_BAD = ("This link is not valid", "<p>Please reply to the email instead, or call your clinic.</p>", 404)
_EXPIRED = ("This link has expired", "<p>Please reply to the email instead, or call your clinic.</p>", 410)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse, responses={404: {}, 410: {}})
def confirm(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """Ask before acting: this page changes nothing."""
    try:
        patient = patient_for_link(session, token, settings=settings)
    except LinkExpired:
        return _page(*_EXPIRED)
    if patient is None:
        return _page(*_BAD)
    form = (
        "<p>Stop the aftercare emails to this address?</p>"
        f'<form method="post" action="/unsubscribe/{escape(token)}">'
        '<button type="submit" style="font-size:1.1rem;padding:.6rem 1rem">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe from aftercare emails", form + _SAFETY)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse, responses={404: {}, 410: {}})
def unsubscribe(token: str, session: SessionDep, settings: SettingsDep, now: NowDep) -> HTMLResponse:
    """The confirmation page's button, or a mail client's RFC 8058 one-click POST."""
    try:
        done = unsubscribe_email(session, token, settings=settings, now=now)
    except LinkExpired:
        return _page(*_EXPIRED)
    if not done:
        return _page(*_BAD)
    session.commit()
    return _page(
        "You are unsubscribed",
        "<p>You will get no more aftercare emails from us.</p>" + _SAFETY,
        status.HTTP_200_OK,
    )
