"""The FastAPI application: JSON API, webhooks, health and metrics. OpenAPI at /docs."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from service.api import bookings, health, inbound, unsubscribe, webhooks

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    app = FastAPI(
        title="Aftercare",
        summary="Aftercare and infection-warning messages after microneedling, with triage and paging.",
        version="0.1.0",
    )
    app.include_router(bookings.router)
    app.include_router(webhooks.router)
    app.include_router(inbound.router)
    app.include_router(health.router)
    app.include_router(unsubscribe.router)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with the path only: request bodies may carry health details.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "an unexpected error; nothing was changed. Try again, and report it if it persists"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    return app


app = create_app()
