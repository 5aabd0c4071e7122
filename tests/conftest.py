"""Shared fixtures: an isolated database per test (PostgreSQL when TEST_DATABASE_URL is set, else a SQLite
file), settings from a clean environment, a controllable clock, and small factories."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlmodel import Session, SQLModel

from service import db
from service.clinics import create_clinic
from service.models import Clinic
from service.settings import reset_settings

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
# A strong key for the suite (a fresh one every run): nothing in the tests may depend on its value.
TEST_SECRET_KEY = "test-" + uuid.uuid4().hex + uuid.uuid4().hex

# Settings a developer may have exported must not leak into the tests.
_SETTING_NAMES = (
    "DATABASE_URL",
    "BROKER_URL",
    "PUBLIC_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_BASE_URL",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_STARTTLS",
    "EMAIL_FROM",
    "INBOUND_EMAIL_SECRET",
    "DATA_DIR",
    "PLANS_DIR",
    "SECRET_KEY",
)


ROOT = str(Path(__file__).resolve().parent.parent)
PROJECT = (f"{ROOT}/service/", f"{ROOT}/tasks/", f"{ROOT}/tests/")


@contextmanager
def _written_only_from(allowed: tuple[str, ...], writes: Callable[[str], bool], what: str) -> Iterator[None]:
    """Fail every statement that ``writes`` matches unless the project code executing it lives under
    ``allowed``: a static ownership check of test_architecture.py, held at run time (it also sees ORM
    flushes and SQL the static check cannot)."""

    def check(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if not writes(statement):
            return
        frame = sys._getframe(1)
        while frame is not None and not frame.f_code.co_filename.startswith(PROJECT):
            frame = frame.f_back
        origin = frame.f_code.co_filename if frame is not None else "?"
        assert origin.startswith(allowed), f"{what} written from {origin}"

    event.listen(Engine, "before_cursor_execute", check)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", check)


@pytest.fixture(scope="session", autouse=True)
def outbox_status_is_written_only_by_the_outbox() -> Iterator[None]:
    """Throughout the suite, every UPDATE that sets an outbox row's status must come from service.outbox
    (or from a test arranging a scene)."""
    with _written_only_from(
        (f"{ROOT}/service/outbox/", f"{ROOT}/tests/"),
        lambda sql: sql.startswith("UPDATE scheduled_message SET") and "status=" in sql.replace(" ", ""),
        "outbox status (only service.outbox may)",
    ):
        yield


@pytest.fixture(scope="session", autouse=True)
def escalations_are_written_only_by_their_lifecycle() -> Iterator[None]:
    """Throughout the suite, every statement that creates or changes an escalation or one of its steps
    must come from service/paging/lifecycle.py (or from a test arranging a scene)."""
    # Both tables: "UPDATE escalation_step ..." starts with "UPDATE escalation" too.
    writes = ("UPDATE escalation", "INSERT INTO escalation", "DELETE FROM escalation")
    with _written_only_from(
        (f"{ROOT}/service/paging/lifecycle.py", f"{ROOT}/tests/"),
        lambda sql: sql.startswith(writes),
        "escalation (only paging.lifecycle may)",
    ):
        yield


@pytest.fixture(scope="session")
def database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for the whole run: a fresh PostgreSQL database, or a SQLite file to copy."""
    from service.migrate import upgrade

    if TEST_DATABASE_URL:
        from tests.stack import new_postgres_database

        with new_postgres_database(TEST_DATABASE_URL, prefix="aftercare_test") as url:
            _migrate(url, upgrade)
            yield url
            db.reset_engine()
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        _migrate(f"sqlite:///{path}", upgrade)
        yield f"sqlite:///{path}"


def _migrate(url: str, upgrade: Any) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["SECRET_KEY"] = TEST_SECRET_KEY
    reset_settings()
    db.reset_engine()
    upgrade()
    db.reset_engine()


@pytest.fixture
def database_url(database_template: str, tmp_path: Path) -> Iterator[str]:
    """This test's own empty, migrated database."""
    if database_template.startswith("sqlite"):
        source = Path(database_template.removeprefix("sqlite:///"))
        target = tmp_path / "aftercare.db"
        shutil.copy(source, target)
        yield f"sqlite:///{target}"
    else:
        engine = create_engine(database_template)
        tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        engine.dispose()
        yield database_template


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in _SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    # No background watchdog in tests: each test that wants one looks itself, with its own clock.
    monkeypatch.setenv("WATCHDOG_ENABLED", "false")
    monkeypatch.chdir(tmp_path)
    reset_settings()
    db.reset_engine()
    yield
    reset_settings()
    db.reset_engine()


@pytest.fixture
def use_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    reset_settings()
    db.reset_engine()
    return database_url


@pytest.fixture
def session(use_database: str) -> Iterator[Session]:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        yield session


@dataclass
class Clock:
    """The clock the API and use cases are given: tests move it instead of sleeping."""

    now: datetime

    def advance(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))  # a Monday, 10:00 in New York


@pytest.fixture
def make_clinic(session: Session, clock: Clock) -> Any:
    def _make(**overrides: Any) -> tuple[Clinic, str]:
        values: dict[str, Any] = {
            "name": "Glow Skin Clinic",
            "timezone": "America/New_York",
            "sms_from": "+12125550100",
            "email_from": "care@glow.example",
        }
        values.update(overrides)
        clinic, key = create_clinic(session, now=clock.now, **values)
        session.commit()
        return clinic, key

    return _make


def booking_body(**overrides: Any) -> dict[str, Any]:
    """A valid booking request; treatment at 14:00 New York time on Monday 2 March 2026."""
    patient: dict[str, Any] = {
        "first_name": "Ana",
        "last_name": "Lopez",
        "phone": "(212) 555-0147",
        "email": "ana@example.com",
        "timezone": "America/New_York",
        "language": "en",
        "channels": ["sms", "email"],
    }
    patient.update(overrides.pop("patient", {}))
    body: dict[str, Any] = {
        "external_id": "ext-1",
        "treatment": "microneedling",
        "starts_at": "2026-03-05T14:00:00-05:00",
        "duration_minutes": 60,
        "patient": patient,
    }
    body.update(overrides)
    return body


@pytest.fixture
def api(use_database: str, clock: Clock) -> Iterator[Any]:
    """The HTTP API in-process, on this test's database, with the test's clock."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.api.deps import get_now

    app = create_app()
    app.dependency_overrides[get_now] = lambda: clock.now
    with TestClient(app, raise_server_exceptions=bool(os.environ.get("DEBUG_RAISE"))) as client:
        yield client


@pytest.fixture
def fake_twilio() -> Iterator[Any]:
    from tests.fakes.twilio_server import FakeTwilio

    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def fake_smtp() -> Iterator[Any]:
    from tests.fakes.smtp_server import FakeSMTP

    with FakeSMTP() as fake:
        yield fake


@pytest.fixture
def providers(fake_twilio: Any, fake_smtp: Any, monkeypatch: pytest.MonkeyPatch, use_database: str) -> Any:
    """Settings pointing SMS at the fake Twilio (through the real client) and email at the SMTP server."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", fake_twilio.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", fake_twilio.auth_token)
    monkeypatch.setenv("TWILIO_API_BASE_URL", fake_twilio.url)
    monkeypatch.setenv("TWILIO_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(fake_smtp.port))
    monkeypatch.setenv("SMTP_STARTTLS", "false")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://aftercare.example")
    reset_settings()
    return fake_twilio, fake_smtp


def book_through_api(api: Any, key: str, *, starts_at: datetime, **overrides: Any) -> dict[str, Any]:
    """Book as a clinic's booking system does; returns the booking document."""
    response = api.post(
        "/api/v1/bookings",
        json=booking_body(starts_at=starts_at.isoformat(), **overrides),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text
    return response.json()
