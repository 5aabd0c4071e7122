"""The error answers every route may give, for the OpenAPI document: clients see each status up front."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    detail: str


_DESCRIPTIONS = {
    200: "The same request was posted before: the booking as it stands",
    400: "A post without the fields every such post has",
    403: "A forged, stale or replayed signature, or the provider is not configured here",
    401: "No API key, or one that is not known (or was revoked)",
    404: "No such thing at this clinic (another clinic's is reported the same way)",
    409: "It conflicts with what is stored (another request under this external id; not open)",
    410: "The link has expired",
    413: "The body is larger than the endpoint takes",
}


def responses(*codes: int, ok_model: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"description": _DESCRIPTIONS[code]}
        entry["model"] = ok_model if code == 200 and ok_model is not None else Problem
        out[code] = entry
    return out
