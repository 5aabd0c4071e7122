"""End to end with real processes: a Celery worker and beat, the broker (Redis when TEST_REDIS_URL is set,
else the embedded SQLite broker), the real Twilio client against the fake Twilio server, and SMTP.

Each fault test checks the two halves of the delivery guarantee: nothing lost, nothing sent twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session

from service import db
from service.api.app import create_app
from service.models import MessageStatus, ScheduledMessage
from tests.conftest import TEST_REDIS_URL, TEST_SECRET_KEY, booking_body
from tests.stack import PrivateRedis, Stack, daytime_timezone, wait_for

pytestmark = pytest.mark.timeout(240)
S = MessageStatus


@pytest.fixture
def broker_url(tmp_path: Path) -> str:
    if TEST_REDIS_URL:
        redis.Redis.from_url(TEST_REDIS_URL).flushdb()
        return TEST_REDIS_URL
    return f"sqla+sqlite:///{tmp_path / 'broker.db'}"


def stack_env(database_url: str, broker: str, providers: Any, tmp_path: Path) -> dict[str, str]:
    twilio, smtp = providers
    return {
        "DATABASE_URL": database_url,
        "BROKER_URL": broker,
        "DATA_DIR": str(tmp_path / "data"),
        "TWILIO_ACCOUNT_SID": twilio.account_sid,
        "TWILIO_AUTH_TOKEN": twilio.auth_token,
        "TWILIO_API_BASE_URL": twilio.url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_STARTTLS": "false",
        "PUBLIC_BASE_URL": "https://aftercare.example",
        "SECRET_KEY": TEST_SECRET_KEY,
    }


@pytest.fixture
def stack(use_database: str, broker_url: str, providers: Any, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path, stack_env(use_database, broker_url, providers, tmp_path))
    yield running
    running.stop_all()


@pytest.fixture
def live_api(use_database: str) -> Iterator[TestClient]:
    """The API on the real clock, as a clinic's booking system meets it."""
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def book_late(api: TestClient, key: str, external_id: str, phone: str = "(212) 555-0147") -> dict[str, Any]:
    """A booking whose treatment ended 90 minutes ago: its post-treatment messages are due at once, for a
    patient in a timezone where it is daytime now (else the SMS would wait for the end of quiet hours)."""
    now = datetime.now(UTC).replace(microsecond=0)
    starts = now - timedelta(minutes=150)
    patient = {"phone": phone, "timezone": daytime_timezone(now)}
    body = booking_body(external_id=external_id, starts_at=starts.isoformat(), patient=patient)
    response = api.post("/api/v1/bookings", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 201, response.text
    return response.json()


def statuses(step: str = "post_immediate") -> dict[tuple[int, str], str]:
    with Session(db.get_engine()) as session:
        rows = session.scalars(select(ScheduledMessage).where(ScheduledMessage.step == step))
        return {(row.booking_id, row.channel): row.status for row in rows}


def sms_sent_to(twilio: Any) -> Counter[str]:
    return Counter(message["to"] for message in twilio.messages)


def test_a_late_booking_gets_its_sms_and_email_within_seconds(stack, live_api, make_clinic, providers):
    twilio, smtp = providers
    _, key = make_clinic()
    stack.start_worker()
    stack.start_beat()
    document = book_late(live_api, key, "late-1")
    try:
        [sms] = twilio.wait_for_messages(1, timeout=30)
        [email] = smtp.wait_for_messages(1, timeout=30)
        wait_for(lambda: set(statuses().values()) == {S.SENT}, timeout=30, what="both rows sent")
    except (AssertionError, TimeoutError):
        print(stack.logs())
        raise
    assert sms["to"] == "+12125550147"
    assert email["To"] == "ana@example.com"
    upcoming = {m["step"] for m in document["messages"] if m["status"] == "scheduled"}
    assert "day3_warning" in upcoming and len(upcoming) >= 6


def test_killing_the_worker_mid_send_loses_nothing_and_sends_nothing_twice(
    stack, live_api, make_clinic, providers
):
    twilio, smtp = providers
    _, key = make_clinic()
    # Twilio takes the message, then holds its answer: the worker is inside the provider call when killed.
    twilio.hang_next(1, seconds=6)
    stack.start_worker()
    stack.start_beat()
    book_late(live_api, key, "kill-1")
    wait_for(lambda: len(twilio.messages) == 1, timeout=30, what="the SMS to reach Twilio")
    stack.kill("worker")
    assert statuses()[next(iter(k for k in statuses() if k[1] == "sms"))] == S.SENDING
    stack.start_worker("worker2")
    try:
        wait_for(lambda: set(statuses().values()) == {S.SENT}, timeout=60, what="the SMS settled as sent")
    except AssertionError:
        print(stack.logs())
        raise
    assert len(twilio.messages) == 1
    assert len(smtp.messages) == 1


def test_twilio_failing_for_a_while_loses_nothing_and_sends_nothing_twice(
    stack, live_api, make_clinic, providers
):
    twilio, smtp = providers
    _, key = make_clinic()
    twilio.fail_until(seconds=8, status=500)
    stack.start_worker()
    stack.start_beat()
    phones = ["(212) 555-0147", "(212) 555-0148", "(212) 555-0149"]
    for number, phone in enumerate(phones):
        book_late(live_api, key, f"outage-{number}", phone=phone)
    try:
        wait_for(
            lambda: len(statuses()) == 6 and set(statuses().values()) == {S.SENT},
            timeout=90,
            what="every message sent after the outage",
        )
    except AssertionError:
        print(statuses(), stack.logs())
        raise
    assert sms_sent_to(twilio) == Counter({"+12125550147": 1, "+12125550148": 1, "+12125550149": 1})
    assert len(smtp.messages) == 3


@pytest.mark.skipif(not PrivateRedis.available(), reason="needs a redis-server binary to restart")
def test_restarting_redis_loses_nothing_and_sends_nothing_twice(
    use_database, providers, live_api, make_clinic, tmp_path
):
    twilio, smtp = providers
    _, key = make_clinic()
    broker = PrivateRedis(tmp_path)
    broker.start()
    stack = Stack(tmp_path, stack_env(use_database, broker.url, providers, tmp_path))
    try:
        # Only the dispatcher runs: it claims the messages and queues their send tasks, which wait in Redis.
        stack.start_worker("dispatcher", queues="dispatch")
        stack.start_beat()
        for number in range(3):
            book_late(live_api, key, f"redis-{number}", phone=f"(212) 555-014{number}")
        wait_for(lambda: broker.queued_tasks() >= 6, timeout=30, what="six send tasks waiting in Redis")
        stack.kill("dispatcher")
        broker.kill()  # no persistence: every waiting task is gone
        broker.start()
        stack.start_worker()
        wait_for(
            lambda: len(statuses()) == 6 and set(statuses().values()) == {S.SENT},
            timeout=90,
            what="every message sent after the restart",
        )
    except AssertionError:
        print(statuses(), stack.logs())
        raise
    finally:
        stack.stop_all()
        broker.kill()
    assert sms_sent_to(twilio) == Counter({"+12125550140": 1, "+12125550141": 1, "+12125550142": 1})
    assert len(smtp.messages) == 3


def test_two_beats_and_two_workers_send_each_message_exactly_once(stack, live_api, make_clinic, providers):
    twilio, smtp = providers
    _, key = make_clinic()
    count = 20
    for number in range(count):
        book_late(live_api, key, f"many-{number}", phone=f"(212) 555-{1000 + number}")
    stack.start_worker("worker-a")
    stack.start_worker("worker-b")
    stack.start_beat("beat-a")
    stack.start_beat("beat-b")
    try:
        wait_for(
            lambda: len(statuses()) == 2 * count and set(statuses().values()) == {S.SENT},
            timeout=90,
            what="every message sent",
        )
    except AssertionError:
        print(Counter(statuses().values()), stack.logs())
        raise
    assert len(twilio.messages) == count
    assert set(sms_sent_to(twilio).values()) == {1}
    assert len(smtp.messages) == count
