"""Signed links for patients: the one-click email unsubscribe (RFC 8058)."""

from __future__ import annotations

import hashlib
import hmac

from service.settings import Settings


def _signature(patient_id: int, settings: Settings) -> str:
    digest = hmac.new(settings.signing_key.encode(), f"unsubscribe:{patient_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def unsubscribe_url(patient_id: int, settings: Settings) -> str:
    token = f"{patient_id}.{_signature(patient_id, settings)}"
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/unsubscribe/{token}"


def patient_from_unsubscribe_token(token: str, settings: Settings) -> int | None:
    """The patient id a link was made for, or None when the link was not made by us."""
    patient_text, _, signature = token.partition(".")
    if not patient_text.isdigit():
        return None
    patient_id = int(patient_text)
    if not hmac.compare_digest(signature, _signature(patient_id, settings)):
        return None
    return patient_id
