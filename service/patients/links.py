"""Signed links for patients: the email unsubscribe link (RFC 8058), which expires.

The token is the patient id signed with SECRET_KEY and dated (itsdangerous), so it can be neither forged
nor used forever: a link in an email forwarded years later no longer switches anything off.
"""

from __future__ import annotations

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from service.settings import Settings

_SALT = "aftercare-unsubscribe"
# A care plan runs about six weeks; a link stays good well past its last email.
LINK_DAYS = 180


class LinkExpired(Exception):
    """A genuine link, too old to act on."""


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.signing_key, salt=_SALT)


def unsubscribe_url(patient_id: int, settings: Settings) -> str:
    token = _serializer(settings).dumps(patient_id)
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/unsubscribe/{token}"


def patient_from_unsubscribe_token(token: str, settings: Settings) -> int | None:
    """The patient id a link was made for; None when we did not make it. Raises LinkExpired."""
    if len(token) > 200:
        return None
    try:
        value = _serializer(settings).loads(token, max_age=LINK_DAYS * 86400)
    except SignatureExpired as exc:
        raise LinkExpired() from exc
    except BadData:
        return None
    return value if isinstance(value, int) and 0 < value < 2**31 else None
