"""Request dependencies: a database session, the clock, the purposes of outbox rows, and the clinic the API
key belongs to."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Path, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from service.clinics import clinic_for_api_key
from service.db import get_engine
from service.models import Clinic
from service.outbox.purpose import Purposes
from service.settings import Settings, get_settings
from service.wiring import purposes


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


def get_now() -> datetime:
    """The request's clock; tests override it to stand at a chosen instant."""
    return datetime.now(UTC)


def get_purposes() -> Purposes:
    """What each kind of outbox row is for: a delivery report's failure follows the row's purpose."""
    return purposes()


_bearer = HTTPBearer(auto_error=False)


def get_clinic(
    session: Annotated[Session, Depends(get_session)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Clinic:
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "send the clinic's API key as 'Authorization: Bearer <key>' (from `aftercare clinic create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    clinic = clinic_for_api_key(session, credentials.credentials)
    if clinic is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this API key is not known; check it, or create a clinic with `aftercare clinic create`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return clinic


SessionDep = Annotated[Session, Depends(get_session)]
NowDep = Annotated[datetime, Depends(get_now)]
ClinicDep = Annotated[Clinic, Depends(get_clinic)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# Row ids are 32-bit integers: a larger one in a path is a 422, not a database error.
Id = Annotated[int, Path(ge=1, le=2**31 - 1, description="a row id")]
