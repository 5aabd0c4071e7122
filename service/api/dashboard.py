"""The staff dashboard: server-rendered pages (``templates/dashboard/``), enhanced with htmx.

Staff log in with their email and password (argon2 hashes); the session is a signed, HttpOnly, SameSite
cookie; every form carries a CSRF token (double-submit, fastapi-csrf-protect); failed logins are limited per
address and email. A staff member sees only their own clinic: anything else is a 404, never a 403, so the
existence of another clinic's patient is not revealed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from fastapi_csrf_protect import CsrfProtect
from fastapi_csrf_protect.exceptions import CsrfProtectError
from itsdangerous import BadData, URLSafeTimedSerializer

from service.api.deps import Id, NowDep, SessionDep, SettingsDep
from service.clinics import authenticate
from service.core.enums import Treatment
from service.dashboard import logins, views
from service.models import Clinic, StaffMember
from service.paging import escalations
from service.replies import inbox
from service.settings import PROJECT_ROOT, Settings

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

CSRF_COOKIE = "aftercare_csrf"
CSRF_FIELD = "csrf_token"
_CSRF_SALT = "fastapi-csrf-token"  # the salt fastapi-csrf-protect signs its cookie with


class Unauthenticated(Exception):
    """No valid session: the dashboard answers with the login page."""


class CsrfRejected(Exception):
    """A form without a valid CSRF token: refused with 403, nothing changes."""


def configure_csrf(settings: Settings) -> None:
    @CsrfProtect.load_config
    def _config() -> list[tuple[str, Any]]:
        return [
            ("secret_key", settings.signing_key),
            ("cookie_key", CSRF_COOKIE),
            ("token_location", "body"),
            ("token_key", CSRF_FIELD),
            ("cookie_samesite", "strict"),
            ("cookie_secure", settings.cookie_secure),
            ("httponly", True),
            ("max_age", settings.SESSION_MAX_AGE_SECONDS),
        ]


@cache
def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(PROJECT_ROOT / "templates" / "dashboard"))
    templates.env.globals["marks"] = views.marks
    return templates


def _csrf_token(request: Request, settings: Settings) -> tuple[str, str | None]:
    """The session's CSRF token, and the signed cookie to set when it is new: one token for every form of a
    session, so a form rendered earlier on the page stays valid after an htmx refresh."""
    signed = request.cookies.get(CSRF_COOKIE)
    if signed:
        try:
            token = URLSafeTimedSerializer(settings.signing_key, salt=_CSRF_SALT).loads(
                signed, max_age=settings.SESSION_MAX_AGE_SECONDS
            )
            return str(token), None
        except BadData:
            pass
    token, signed = CsrfProtect().generate_csrf_tokens()
    return token, signed


def page(
    request: Request,
    settings: Settings,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    token, new_cookie = _csrf_token(request, settings)
    response = _templates().TemplateResponse(
        request,
        name,
        {"csrf_token": token, "staff": None, "clinic": None, **context},
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"  # patients' names and messages: never cached
    if new_cookie:
        CsrfProtect().set_csrf_cookie(new_cookie, response)
    return response


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token has been checked."""
    form = await request.form()
    try:
        await CsrfProtect().validate_csrf(request)
    except CsrfProtectError as exc:
        raise CsrfRejected(str(exc)) from exc
    return {key: str(value) for key, value in form.items()}


def current_staff(request: Request, session: SessionDep) -> StaffMember:
    staff_id = request.session.get("staff_id")
    staff = session.get(StaffMember, staff_id) if isinstance(staff_id, int) else None
    if staff is None or not staff.active:
        request.session.clear()
        raise Unauthenticated()
    return staff


StaffDep = Annotated[StaffMember, Depends(current_staff)]
FormDep = Annotated[dict[str, str], Depends(checked_form)]


def _base(session: SessionDep, staff: StaffMember, name: str) -> dict[str, Any]:
    return {"staff": staff, "clinic": session.get(Clinic, staff.clinic_id), "page": name}


def _not_found(
    request: Request, settings: Settings, session: SessionDep, staff: StaffMember, detail: str
) -> HTMLResponse:
    return page(
        request, settings, "not_found.html", {**_base(session, staff, ""), "detail": detail}, status_code=404
    )


def _safe_next(target: str | None) -> str:
    # Only our own pages: a link that sends a clinician elsewhere after login is a phishing tool.
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


# ---- login ----------------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, settings: SettingsDep, next: str = "/dashboard") -> HTMLResponse:
    return page(request, settings, "login.html", {"next": _safe_next(next), "email": "", "error": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, form: FormDep, session: SessionDep, settings: SettingsDep, now: NowDep
) -> Response:
    email, password = form.get("email", "")[:254], form.get("password", "")[:1024]
    address = request.client.host if request.client else "?"
    window = timedelta(seconds=settings.LOGIN_WINDOW_SECONDS)
    context = {"next": _safe_next(form.get("next")), "email": email}
    if logins.too_many(session, address, email, now=now, limit=settings.LOGIN_MAX_FAILURES, window=window):
        minutes = settings.LOGIN_WINDOW_SECONDS // 60
        error = f"Too many failed logins. Wait {minutes} minutes, or ask your manager for a new password."
        return page(request, settings, "login.html", {**context, "error": error}, status_code=429)
    staff = authenticate(session, email, password)
    if staff is None:
        logins.record_failure(session, address, email, now=now, window=window)
        session.commit()
        error = "Wrong email or password."
        return page(request, settings, "login.html", {**context, "error": error}, status_code=401)
    logins.clear(session, address, email)
    session.commit()
    request.session.clear()
    request.session["staff_id"] = staff.id
    return RedirectResponse(context["next"], status_code=status.HTTP_303_SEE_OTHER)


@router.post("/logout")
def logout(request: Request, form: FormDep) -> Response:
    request.session.clear()
    return RedirectResponse("/dashboard/login", status_code=status.HTTP_303_SEE_OTHER)


# ---- the escalation queue --------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def queue_page(
    request: Request, session: SessionDep, staff: StaffDep, settings: SettingsDep, now: NowDep
) -> HTMLResponse:
    items = views.queue(session, staff.clinic_id, now=now)
    return page(request, settings, "queue.html", {**_base(session, staff, "queue"), "escalations": items})


@router.get("/queue", response_class=HTMLResponse)
def queue_fragment(
    request: Request, session: SessionDep, staff: StaffDep, settings: SettingsDep, now: NowDep
) -> HTMLResponse:
    """The queue alone, for htmx to refresh every few seconds."""
    items = views.queue(session, staff.clinic_id, now=now)
    return page(request, settings, "_queue.html", {**_base(session, staff, "queue"), "escalations": items})


@router.get("/escalations/{escalation_id}", response_class=HTMLResponse)
def escalation_page(
    escalation_id: Id,
    request: Request,
    session: SessionDep,
    staff: StaffDep,
    settings: SettingsDep,
    now: NowDep,
) -> HTMLResponse:
    try:
        found = escalations.get(session, staff.clinic_id, escalation_id)
    except escalations.NotFound as exc:
        return _not_found(request, settings, session, staff, str(exc))
    item = views.escalation(session, found, now=now)
    return page(request, settings, "escalation.html", {**_base(session, staff, "queue"), "item": item})


@router.post("/escalations/{escalation_id}/ack", response_class=HTMLResponse)
def acknowledge(
    escalation_id: Id,
    request: Request,
    form: FormDep,
    session: SessionDep,
    staff: StaffDep,
    settings: SettingsDep,
    now: NowDep,
) -> Response:
    try:
        found = escalations.get(session, staff.clinic_id, escalation_id)
    except escalations.NotFound as exc:
        return _not_found(request, settings, session, staff, str(exc))
    # False when someone took it a moment earlier (by SMS, the API) or it was resolved: nothing changed,
    # and the page this returns to says who has it.
    if escalations.acknowledge(session, found, by=staff, via="dashboard", now=now):
        session.commit()
    if request.headers.get("HX-Request"):
        return queue_fragment(request, session, staff, settings, now)
    return RedirectResponse(f"/dashboard/escalations/{escalation_id}", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/escalations/{escalation_id}/resolve", response_class=HTMLResponse)
def resolve(
    escalation_id: Id,
    request: Request,
    form: FormDep,
    session: SessionDep,
    staff: StaffDep,
    settings: SettingsDep,
    now: NowDep,
) -> Response:
    try:
        found = escalations.get(session, staff.clinic_id, escalation_id)
    except escalations.NotFound as exc:
        return _not_found(request, settings, session, staff, str(exc))
    note = form.get("note", "").strip()[:2000]
    # False when it was resolved already (the page shows by whom and with what note): nothing changed.
    if note and escalations.resolve(session, found, by=staff, note=note, via="dashboard", now=now):
        session.commit()
    return RedirectResponse(f"/dashboard/escalations/{escalation_id}", status_code=status.HTTP_303_SEE_OTHER)


# ---- the inbox ------------------------------------------------------------------------------------------


def _inbox(
    request: Request,
    session: SessionDep,
    staff: StaffMember,
    settings: Settings,
    now: datetime,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    clinic = session.get(Clinic, staff.clinic_id)
    assert clinic is not None
    items = views.inbox_items(session, clinic, now=now)
    context = {**_base(session, staff, "inbox"), "items": items, "error": error}
    return page(request, settings, "inbox.html", context, status_code=status_code)


@router.get("/inbox", response_class=HTMLResponse)
def inbox_page(
    request: Request, session: SessionDep, staff: StaffDep, settings: SettingsDep, now: NowDep
) -> HTMLResponse:
    return _inbox(request, session, staff, settings, now)


@router.post("/inbox/{message_id}/reply", response_class=HTMLResponse)
def reply(
    message_id: Id,
    request: Request,
    form: FormDep,
    session: SessionDep,
    staff: StaffDep,
    settings: SettingsDep,
    now: NowDep,
) -> Response:
    try:
        message = inbox.get(session, staff.clinic_id, message_id)
        inbox.reply(session, message, staff=staff, text=form.get("text", ""), now=now)
    except inbox.NotFound as exc:
        return _not_found(request, settings, session, staff, str(exc))
    except ValueError as exc:
        session.rollback()
        return _inbox(request, session, staff, settings, now, error=str(exc), status_code=422)
    session.commit()
    return RedirectResponse("/dashboard/inbox", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/inbox/{message_id}/dismiss", response_class=HTMLResponse)
def dismiss(
    message_id: Id,
    request: Request,
    form: FormDep,
    session: SessionDep,
    staff: StaffDep,
    settings: SettingsDep,
    now: NowDep,
) -> Response:
    try:
        message = inbox.get(session, staff.clinic_id, message_id)
    except inbox.NotFound as exc:
        return _not_found(request, settings, session, staff, str(exc))
    inbox.dismiss(session, message, staff=staff, now=now)
    session.commit()
    return RedirectResponse("/dashboard/inbox", status_code=status.HTTP_303_SEE_OTHER)


# ---- patients, bookings, care plans, photos -------------------------------------------------------------


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
def patient_page(
    patient_id: Id, request: Request, session: SessionDep, staff: StaffDep, settings: SettingsDep
) -> HTMLResponse:
    patient = views.patient_of_clinic(session, staff.clinic_id, patient_id)
    if patient is None:
        return _not_found(request, settings, session, staff, f"no patient {patient_id} at this clinic")
    context = {**_base(session, staff, ""), "patient": patient, "events": views.timeline(session, patient)}
    return page(request, settings, "patient.html", context)


def _local(clinic: Clinic) -> Any:
    zone = ZoneInfo(clinic.timezone)
    return lambda moment: moment.astimezone(zone).strftime("%a %d %b %H:%M")


@router.get("/bookings", response_class=HTMLResponse)
def bookings_page(
    request: Request, session: SessionDep, staff: StaffDep, settings: SettingsDep, now: NowDep
) -> HTMLResponse:
    base = _base(session, staff, "bookings")
    context = {
        **base,
        "bookings": views.upcoming(session, staff.clinic_id, now=now),
        "local": _local(base["clinic"]),
    }
    return page(request, settings, "bookings.html", context)


@router.get("/care-plan", response_class=HTMLResponse)
def plan_page(
    request: Request,
    session: SessionDep,
    staff: StaffDep,
    settings: SettingsDep,
    now: NowDep,
    treatment: Treatment = Treatment.MICRONEEDLING,
    date: str = "",
) -> HTMLResponse:
    base = _base(session, staff, "plan")
    clinic: Clinic = base["clinic"]
    planned, error = [], None
    if date:
        try:
            starts = datetime.fromisoformat(date[:16]).replace(tzinfo=ZoneInfo(clinic.timezone))
            planned = views.plan_preview(clinic, treatment.value, starts, now=now)
        except ValueError:
            error = "Give the date and time as YYYY-MM-DDTHH:MM."
    context = {
        **base, "treatments": [t.value for t in Treatment], "treatment": treatment.value, "date": date[:16],
        "planned": planned, "error": error, "local": _local(clinic),
    }  # fmt: skip
    return page(request, settings, "plan.html", context)


@router.get("/media/{media_id}")
def media(media_id: Id, session: SessionDep, staff: StaffDep) -> Response:
    found = views.media_of_clinic(session, staff.clinic_id, media_id)
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    # Only images are shown inline; anything else downloads, so a crafted file cannot run in our origin.
    inline = found.content_type in ("image/jpeg", "image/png", "image/gif", "image/webp", "image/heic")
    return Response(
        found.data,
        media_type=found.content_type if inline else "application/octet-stream",
        headers={
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline" if inline else f'attachment; filename="photo-{media_id}"',
        },
    )


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=status.HTTP_303_SEE_OTHER)
