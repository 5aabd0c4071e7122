"""One-click email unsubscribe (RFC 8058): the link in every email's List-Unsubscribe header."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse

from service.api.deps import NowDep, SessionDep, SettingsDep
from service.patients.consent import unsubscribe_email

router = APIRouter(tags=["unsubscribe"])

_DONE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Unsubscribed</title>
<body style="font-family:sans-serif;max-width:32rem;margin:3rem auto">
<h1>You are unsubscribed</h1><p>You will get no more aftercare emails from us. If you have pus, fever,
spreading redness or trouble breathing, please call your clinic or emergency services.</p></body></html>"""


def _unsubscribe(token: str, session: SessionDep, settings: SettingsDep, now: NowDep) -> None:
    if not unsubscribe_email(session, token, settings=settings, now=now):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "this unsubscribe link is not valid; reply to the email instead"
        )
    session.commit()


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_one_click(
    token: str, session: SessionDep, settings: SettingsDep, now: NowDep
) -> HTMLResponse:
    _unsubscribe(token, session, settings, now)
    return HTMLResponse(_DONE)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_link(token: str, session: SessionDep, settings: SettingsDep, now: NowDep) -> HTMLResponse:
    _unsubscribe(token, session, settings, now)
    return HTMLResponse(_DONE)
