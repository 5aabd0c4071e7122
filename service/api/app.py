"""The FastAPI application: JSON API, webhooks, health and metrics. OpenAPI at /docs.

Built by ``create_app`` (uvicorn runs it with ``--factory``), never at import: building it configures the
Celery app this process publishes with.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from service.api import bookings, escalations, health, unsubscribe, webhooks
from service.celery import create_celery
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Aftercare",
        summary="Aftercare and infection-warning messages after microneedling, with triage and paging.",
        version="0.1.0",
    )
    app.state.celery = create_celery(settings)
    app.state.metrics_registry = health.metrics_registry()
    app.include_router(bookings.router)
    app.include_router(escalations.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(unsubscribe.router)

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
