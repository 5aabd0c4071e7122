"""`aftercare serve` as a new user runs it: no configuration at all (SQLite, the embedded broker, console
channels), a clinic from the CLI, a booking with HTTP, the messages in the console, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from service.settings import PROJECT_ROOT
from tests.conftest import booking_body
from tests.stack import daytime_timezone, free_port, wait_for

pytestmark = pytest.mark.timeout(180)


# A clinic as the README's walk-through creates it.
CLINIC = ["--name", "Glow", "--timezone", "America/New_York", "--email-from", "care@glow.example"]


def aftercare(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_runs_web_worker_and_beat_with_no_configuration_and_stops_on_ctrl_c(tmp_path: Path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "BROKER_URL", "TWILIO_ACCOUNT_SID", "SMTP_HOST", "SECRET_KEY")
    }
    env.update(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "DISPATCH_INTERVAL_SECONDS": "1",
            "PYTHONPATH": str(PROJECT_ROOT),
        }
    )
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(base), timeout=60, what="the web process to answer /healthz")
        created = aftercare("clinic", "create", *CLINIC, "--sms-from", "+12125550100", env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["api_key"]
        now = datetime.now(UTC).replace(microsecond=0)
        starts = now - timedelta(minutes=150)
        patient = {"timezone": daytime_timezone(now)}  # daytime there now: the SMS goes at once
        body = booking_body(external_id="walkthrough-1", starts_at=starts.isoformat(), patient=patient)
        headers = {"Authorization": f"Bearer {key}"}
        booking = httpx.post(f"{base}/api/v1/bookings", json=body, headers=headers, timeout=10)
        assert booking.status_code == 201, booking.text

        def immediate_sent() -> bool:
            document = httpx.get(
                f"{base}/api/v1/bookings/{booking.json()['id']}", headers=headers, timeout=10
            ).json()
            return {m["status"] for m in document["messages"] if m["step"] == "post_immediate"} == {"sent"}

        wait_for(immediate_sent, timeout=30, what="the post-treatment SMS and email to be sent")
        output = log_path.read_text(errors="replace")
        assert "+12125550147" in output and "ana@example.com" in output  # the console channel printed both
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    assert "stopping worker" in log_path.read_text(errors="replace")
    # No SECRET_KEY was given: the embedded set-up made its own, readable by the owner alone.
    key_file = tmp_path / "data" / "secret_key"
    assert len(key_file.read_text().strip()) >= 32 and key_file.stat().st_mode & 0o777 == 0o600


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_clinic_create_refuses_a_bad_timezone_with_a_message(tmp_path: Path):
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("DATABASE_URL", None)
    result = aftercare(
        "clinic",
        "create",
        "--name",
        "Glow",
        "--timezone",
        "Eastern",
        "--sms-from",
        "+12125550100",
        "--email-from",
        "care@glow.example",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "IANA timezone" in result.stderr and "Traceback" not in result.stderr


def test_staff_add_prints_the_new_members_id(tmp_path: Path):
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("DATABASE_URL", None)
    clinic = aftercare(
        "clinic",
        "create",
        *CLINIC,
        "--sms-from",
        "(212) 555-0100",
        "--ack-timeout",
        "emergency=120",
        env=env,
        cwd=tmp_path,
    )
    assert clinic.returncode == 0, clinic.stderr
    clinic_id = json.loads(clinic.stdout)["id"]
    staff = aftercare(
        "staff",
        "add",
        "--clinic",
        str(clinic_id),
        "--name",
        "Dr Rivera",
        "--phone",
        "+12125550111",
        "--email",
        "rivera@glow.example",
        "--level",
        "1",
        "--password",
        "s3cret-pass",
        env=env,
        cwd=tmp_path,
    )
    assert staff.returncode == 0, staff.stderr
    assert json.loads(staff.stdout) == {"id": 1}
