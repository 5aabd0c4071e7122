"""The FastAPI application: JSON API, webhooks, health and metrics. OpenAPI at /docs.

Built by ``create_app`` (uvicorn runs it with ``--factory``), never at import: building it configures the
Celery app this process publishes with.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from anyio import to_thread
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from uvicorn.config import STARTUP_FAILURE

from service.api import bookings, dashboard, escalations, health, unsubscribe, webhooks
from service.api.limits import ApiKeyFirst, BodyLimit, QuietFailures
from service.celery import create_celery
from service.core.plans import PlanError
from service.monitoring.watchdog import Watchdog
from service.scheduling.care_plans import check_plans
from service.settings import Settings, get_settings
from service.triage.loader import load_lexicon

STATIC_DIR = Path(__file__).resolve().parent / "static"

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The web application. Refuses to build (exits) on a broken care plan: see ``_refuse_broken_plans``."""
    settings = settings or get_settings()
    _refuse_broken_plans(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The silent-failure watchdog runs beside the web server: it needs neither beat nor the workers.
        watchdog = Watchdog(settings) if settings.WATCHDOG_ENABLED else None
        if watchdog:
            watchdog.start()
        app.state.watching_since = watchdog.started if watchdog else datetime.now(UTC)
        # Compiled before the first reply arrives, not inside it (and off the event loop).
        await to_thread.run_sync(load_lexicon)
        yield
        if watchdog:
            watchdog.stop()

    app = FastAPI(
        title="Aftercare",
        summary="Aftercare and infection-warning messages after microneedling, with triage and paging.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.watching_since = datetime.now(UTC)
    app.state.celery = create_celery(settings)
    app.state.metrics_registry = health.metrics_registry()
    # The dashboard's session: signed with SECRET_KEY, HttpOnly (Starlette always sets it), SameSite=Lax so
    # the link in a page SMS opens a logged-in dashboard, Secure whenever the service is reached over https.
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.signing_key,
        session_cookie="aftercare_session",
        max_age=settings.SESSION_MAX_AGE_SECONDS,
        same_site="lax",
        https_only=settings.cookie_secure,
    )
    # Outermost last: the API key is checked before anything reads a body, then bodies are capped.
    app.add_middleware(BodyLimit)
    app.add_middleware(ApiKeyFirst)
    # Outside them all but Starlette's own error middleware, which logs a failure's whole traceback (its
    # message may quote a phone or what a patient wrote): a failure is answered and logged by type here.
    app.add_middleware(QuietFailures)
    dashboard.configure_csrf(settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(dashboard.router)
    app.include_router(bookings.router)
    app.include_router(escalations.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(unsubscribe.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The field and what is wrong with it, and at most a short prefix of what was sent: an answer must
        # not echo a 20 MB name back, nor a patient's details to wherever the error is logged.
        errors = [
            {
                "loc": [str(part)[:60] for part in error.get("loc", ())][:8],
                "msg": str(error.get("msg", ""))[:300],
                "type": str(error.get("type", "")),
                **({"input": _prefix(error["input"])} if "input" in error else {}),
            }
            for error in exc.errors()[:20]
        ]
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(dashboard.Unauthenticated)
    async def _login(request: Request, exc: dashboard.Unauthenticated) -> Response:
        if request.headers.get("HX-Request"):
            # htmx cannot follow a redirect into a fragment: tell it to load the login page whole.
            return Response(status_code=401, headers={"HX-Redirect": "/dashboard/login"})
        return dashboard.login_redirect(request)

    @app.exception_handler(dashboard.CsrfRejected)
    async def _csrf(request: Request, exc: dashboard.CsrfRejected) -> HTMLResponse:
        return HTMLResponse(
            "<p>This form has expired or was not sent from the dashboard. Go back, reload the page and try "
            "again.</p>",
            status_code=status.HTTP_403_FORBIDDEN,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with the path and the exception's type only: request bodies and SQL parameters may carry
        # phone numbers and health details.
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse(
            {"detail": "an unexpected error; nothing was changed. Try again, and report it if it persists"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    return app


def _refuse_broken_plans(settings: Settings) -> None:
    """Check the care plans before the first booking can name one, in the factory uvicorn calls, not in the
    lifespan: a lifespan failure is reported with a traceback, this with one line naming the file, the
    step and the missing template. The exit status is uvicorn's own for "failed before serving", on which
    its multi-process supervisor stops instead of restarting a worker that would fail the same way, for
    ever (the supervisor itself then exits 0, which is uvicorn's choice: a deploy's release step,
    `aftercare migrate`, is what refuses a broken plan with a failing status)."""
    try:
        check_plans(settings.PLANS_DIR)
    except PlanError as error:
        print(f"aftercare: {error}", file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None


def _prefix(value: object) -> object:
    if isinstance(value, str):
        return value if len(value) <= 40 else value[:40] + "…"
    if isinstance(value, bool | float) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**12 else "a very large number"
    return f"a {type(value).__name__}"
