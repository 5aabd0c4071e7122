"""Paging end to end with real processes: a Celery worker and beat, the broker, the real Twilio client
against the fake Twilio server, and SMTP. An urgent reply pages level 1 within seconds, level 2 after the
(shortened) timeout, and an ACK by SMS from the level-2 phone stops the paging and tells the patient.
Steps live in the database, so a killed worker or a flushed broker between two levels loses none."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session, col
from twilio.request_validator import RequestValidator

from service import db
from service.api.app import create_app
from service.clinics import add_staff
from service.core.enums import EscalationStatus, StepStatus
from service.models import Escalation, EscalationStep
from service.settings import PROJECT_ROOT, reset_settings
from tests.conftest import booking_body
from tests.fakes.twilio_server import DEFAULT_AUTH_TOKEN
from tests.stack import wait_for
from tests.test_end_to_end import broker_url, stack, stack_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(240)

PUBLIC = "https://aftercare.example"
CLINIC_NUMBER = "+12125550100"
PATIENT = "+12125550147"
NURSE, DOCTOR = "+12125550111", "+12125550122"
TIMEOUT = 6  # seconds: the clinic's urgent acknowledgement timeout, shortened for the test


def signed_sms(api: Any, body: str, sender: str, sid: str) -> Any:
    form = {"MessageSid": sid, "From": sender, "To": CLINIC_NUMBER, "Body": body, "NumMedia": "0"}
    signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(f"{PUBLIC}/webhooks/twilio/sms", form)
    response = api.post("/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    return response


@pytest.fixture
def live_api(use_database: str, providers: Any, broker_url: str, monkeypatch: Any) -> Iterator[TestClient]:  # noqa: F811
    """The API on the real clock, publishing the steps it opens to the broker the worker reads."""
    monkeypatch.setenv("BROKER_URL", broker_url)
    reset_settings()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def paging_clinic(session: Any, make_clinic: Any, clock: Any, live_api: Any) -> Any:
    clinic, key = make_clinic(ack_timeouts={"urgent": TIMEOUT, "emergency": TIMEOUT})
    add_staff(
        session,
        clinic=clinic,
        name="Nia Nurse",
        phone=NURSE,
        email="nia@glow.example",
        level=1,
        now=clock.now,
    )
    add_staff(
        session,
        clinic=clinic,
        name="Dan Doctor",
        phone=DOCTOR,
        email="dan@glow.example",
        level=2,
        now=clock.now,
    )
    session.commit()
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    response = live_api.post(
        "/api/v1/bookings",
        json=booking_body(starts_at=starts.isoformat()),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text
    return clinic


def to(twilio: Any, phone: str) -> list[dict[str, Any]]:
    return [m for m in twilio.messages if m["to"] == phone]


def pages(twilio: Any, phone: str) -> list[dict[str, Any]]:
    return [m for m in to(twilio, phone) if " page: " in m["body"]]


def ack_code(page: dict[str, Any]) -> str:
    found = re.search(r"ACK ([A-Z0-9]+)", page["body"])
    assert found, page["body"]
    return found.group(1)


def test_urgent_reply_pages_level_one_then_level_two_until_ack_by_sms(
    stack,  # noqa: F811
    live_api,
    paging_clinic,
    providers,  # noqa: F811
):
    twilio, smtp = providers
    stack.start_worker()
    stack.start_beat()
    stack.wait_ready()
    posted = time.monotonic()
    signed_sms(live_api, "there is pus and I have a fever", PATIENT, "SM" + "1" * 32)
    try:
        [page] = wait_for(lambda: to(twilio, NURSE), timeout=30, what="the level-1 page SMS")
        first_page_seconds = time.monotonic() - posted
        wait_for(
            lambda: [m for m in smtp.messages if m["To"] == "nia@glow.example"], timeout=30, what="its email"
        )
        assert to(twilio, DOCTOR) == []
        wait_for(lambda: to(twilio, DOCTOR), timeout=TIMEOUT + 30, what="the level-2 page after the timeout")
        signed_sms(live_api, f"ACK {ack_code(page)}", DOCTOR, "SM" + "2" * 32)
        # The inbound worker acts on the command and texts the doctor back.
        wait_for(lambda: [m for m in to(twilio, DOCTOR) if "acknowledged" in m["body"].lower()], timeout=30,
                 what="the doctor told the ACK was taken")  # fmt: skip
        told = wait_for(lambda: [m for m in to(twilio, PATIENT) if "clinician has your message" in m["body"]],
                        timeout=30, what="the patient told")  # fmt: skip
        assert told
        # Paging has stopped: the escalation is acknowledged and no step is left to run.
        escalation, waiting = _state()
        assert escalation.status == EscalationStatus.ACKNOWLEDGED and escalation.active_step_id is None
        assert waiting == []
    except AssertionError:
        print(stack.logs())
        raise
    # One page each (the doctor's other SMS is the answer to his ACK).
    assert len(pages(twilio, NURSE)) == 1 and len(pages(twilio, DOCTOR)) == 1
    print(f"inbound webhook to first page SMS at the provider: {first_page_seconds:.2f} s")
    assert first_page_seconds < 10  # generous for CI; the README promises about 2 s


def test_a_worker_killed_between_two_steps_loses_no_step(stack, live_api, paging_clinic, providers):  # noqa: F811
    twilio, _ = providers
    stack.start_worker()
    stack.start_beat()
    signed_sms(live_api, "pus and fever", PATIENT, "SM" + "3" * 32)
    try:
        wait_for(lambda: to(twilio, NURSE), timeout=30, what="the level-1 page")
        stack.kill("worker")  # dies with the next step pending in the database
        wait_for(_next_step_is_due, timeout=TIMEOUT + 10, what="the next step to fall due with no worker")
        stack.start_worker("worker2")
        wait_for(lambda: to(twilio, DOCTOR), timeout=60, what="the level-2 page from the new worker")
    except AssertionError:
        print(stack.logs())
        raise
    assert len(to(twilio, DOCTOR)) == 1 and len(to(twilio, NURSE)) == 1


def test_a_broker_flushed_between_two_levels_loses_no_step(
    stack,  # noqa: F811
    live_api,
    paging_clinic,
    providers,
    broker_url,  # noqa: F811
):
    if not broker_url.startswith("redis"):
        pytest.skip("flushing needs Redis (the PostgreSQL pass runs it)")
    twilio, _ = providers
    stack.start_worker()
    stack.start_beat()
    signed_sms(live_api, "pus and fever", PATIENT, "SM" + "4" * 32)
    try:
        wait_for(lambda: to(twilio, NURSE), timeout=30, what="the level-1 page")
        redis.Redis.from_url(broker_url).flushdb()
        wait_for(lambda: to(twilio, DOCTOR), timeout=TIMEOUT + 60, what="the level-2 page after the flush")
    except AssertionError:
        print(stack.logs())
        raise
    assert len(to(twilio, DOCTOR)) == 1


def test_no_escalation_step_waits_in_the_broker():
    """Steps wait in the database and are claimed when due: no countdown, no eta anywhere."""
    sources = [p for root in ("service", "tasks") for p in (PROJECT_ROOT / root).rglob("*.py")]
    offenders = [
        f"{p.relative_to(PROJECT_ROOT)}:{n}"
        for p in sources
        for n, line in enumerate(Path(p).read_text().splitlines(), start=1)
        if re.search(r"\b(countdown|eta)\s*=", line)
    ]
    assert offenders == []


def _state() -> tuple[Escalation, list[EscalationStep]]:
    with Session(db.get_engine()) as session:
        escalation = session.scalars(select(Escalation)).one()
        waiting = session.scalars(
            select(EscalationStep).where(
                col(EscalationStep.status).in_([StepStatus.PENDING, StepStatus.CLAIMED])
            )
        ).all()
        return escalation, list(waiting)


def _next_step_is_due() -> bool:
    _, waiting = _state()
    return any(step.due_at <= datetime.now(UTC) for step in waiting)
