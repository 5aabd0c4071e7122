"""The escalation API (docs/architecture.md#interface): the open escalations, acknowledge and resolve."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from service.api.deps import ClinicDep, Id, NowDep, SessionDep
from service.api.errors import responses
from service.core.enums import EscalationStatus
from service.models import Escalation, id_of
from service.paging import escalations, queries

router = APIRouter(prefix="/api/v1/escalations", tags=["escalations"])


class EscalationMessageOut(BaseModel):
    id: int
    received_at: datetime
    severity: str
    channel: str


class EscalationOut(BaseModel):
    id: int
    ack_code: str
    severity: str
    status: str
    subject: str
    level: int | None
    patient_id: int | None
    booking_id: int | None
    created_at: datetime
    first_paged_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: int | None
    resolved_at: datetime | None
    resolution_note: str | None
    messages: list[EscalationMessageOut]


class ResolveIn(BaseModel):
    note: str = Field(min_length=1, max_length=2000, description="what was done, for the record")


def _document(session: SessionDep, escalation: Escalation) -> EscalationOut:
    return EscalationOut(
        id=id_of(escalation),
        ack_code=escalation.ack_code,
        severity=escalation.severity,
        status=escalation.status,
        subject=escalation.subject,
        level=queries.current_level(session, escalation),
        patient_id=escalation.patient_id,
        booking_id=escalation.booking_id,
        created_at=escalation.created_at,
        first_paged_at=escalation.first_paged_at,
        acknowledged_at=escalation.acknowledged_at,
        acknowledged_by=escalation.acknowledged_by_id,
        resolved_at=escalation.resolved_at,
        resolution_note=escalation.resolution_note,
        messages=[
            EscalationMessageOut(
                id=id_of(m), received_at=m.received_at, severity=m.severity, channel=m.channel
            )
            for m in queries.messages_of(session, id_of(escalation))
        ],
    )


def _own(session: SessionDep, clinic: ClinicDep, escalation_id: Id) -> Escalation:
    try:
        return escalations.get(session, id_of(clinic), escalation_id)
    except escalations.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("", response_model=list[EscalationOut], responses=responses(401))
def list_escalations(
    session: SessionDep,
    clinic: ClinicDep,
    status_: Annotated[EscalationStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[EscalationOut]:
    """The clinic's escalations, most serious and oldest first; ``?status=open`` is who is being paged."""
    rows = queries.clinic_escalations(session, id_of(clinic), status=status_, limit=limit)
    return [_document(session, row) for row in rows]


@router.post("/{escalation_id}/ack", response_model=EscalationOut, responses=responses(401, 404, 409, 413))
def acknowledge(escalation_id: Id, session: SessionDep, clinic: ClinicDep, now: NowDep) -> EscalationOut:
    """Stop paging and tell the patient a clinician has their message. 409 when it is not open."""
    escalation = _own(session, clinic, escalation_id)
    if not escalations.acknowledge(session, escalation, by=None, via="api", now=now):
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"escalation {escalation_id} is {escalation.status}, not open"
        )
    session.commit()
    return _document(session, escalation)


@router.post(
    "/{escalation_id}/resolve", response_model=EscalationOut, responses=responses(401, 404, 409, 413)
)
def resolve(
    escalation_id: Id, body: ResolveIn, session: SessionDep, clinic: ClinicDep, now: NowDep
) -> EscalationOut:
    """Close it with a note (paging stops if it had not been acknowledged). 409 when already resolved."""
    escalation = _own(session, clinic, escalation_id)
    if not escalations.resolve(session, escalation, by=None, note=body.note, via="api", now=now):
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"escalation {escalation_id} is already resolved")
    session.commit()
    return _document(session, escalation)
