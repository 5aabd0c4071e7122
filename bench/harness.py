"""What every benchmark needs: a throwaway database (PostgreSQL or SQLite), a private Redis, the production
process layout (web, workers, beat as Procfile and `aftercare serve` run them) against the fake Twilio
answering after 100 ms and the fake SMTP server, and a clinic with patients whose messages are due now.

Benchmarks print figures; they assert nothing about time (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 40)

from sqlalchemy import create_engine  # noqa: E402
from sqlmodel import Session  # noqa: E402

from service import db  # noqa: E402
from service.api.schemas import BookingIn  # noqa: E402
from service.celery import DISPATCH_QUEUE, INBOUND_QUEUE, SEND_QUEUE  # noqa: E402
from service.clinics import add_staff, create_clinic  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.models import Clinic  # noqa: E402
from service.scheduling.bookings import create_booking  # noqa: E402
from service.serve import beat_command, web_command, worker_command  # noqa: E402
from service.settings import get_settings, psycopg_url, reset_settings  # noqa: E402
from tests.fakes.smtp_server import FakeSMTP  # noqa: E402
from tests.fakes.twilio_server import FakeTwilio  # noqa: E402
from tests.stack import PrivateRedis, free_port, new_postgres_database, wait_for  # noqa: E402

POSTGRES = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TWILIO_LATENCY = 0.1  # seconds: about what the real Messages API takes to answer


def record(name: str, **figures: Any) -> dict[str, Any]:
    """Print one benchmark's figures as one JSON line (bench/run.py's output format)."""
    import json

    line = {"name": name, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}}
    print(json.dumps(line), flush=True)
    return line


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mib(pid: int) -> float:
    """Resident memory of one process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process (and its waited-for children) has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_available() -> bool:
    try:
        engine = create_engine(psycopg_url(POSTGRES))
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A new, migrated database of ``kind`` ("postgresql" or "sqlite") made the one this process uses;
    yields its URL and drops it afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="aftercare-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            _use(url)
            try:
                yield url
            finally:
                db.reset_engine()
        return
    with new_postgres_database(POSTGRES, prefix="aftercare_bench") as url:
        try:
            _use(url)
            yield url
        finally:
            db.reset_engine()


def _use(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    reset_settings()
    db.reset_engine()
    upgrade()


# ---- the clinic and its patients --------------------------------------------------------------------------


def make_clinic(session: Session, *, now: datetime, staff: int = 0) -> tuple[Clinic, str]:
    """A clinic without quiet hours (so a benchmark runs at any hour) and ``staff`` level-1 staff."""
    clinic, key = create_clinic(
        session,
        name="Bench Clinic",
        timezone="UTC",
        sms_from="+12125550100",
        email_from="care@bench.example",
        now=now,
        quiet_hours="00:00-00:00",
    )
    session.flush()
    for number in range(staff):
        add_staff(
            session, clinic=clinic, name=f"Nurse {number}", phone=f"+1646555{number:04d}",
            email=f"nurse{number}@bench.example", level=1, now=now,
        )  # fmt: skip
    session.commit()
    return clinic, key


def patient_phone(number: int) -> str:
    return f"+1212{5550000 + number:07d}"


def booking_body(number: int, *, starts: datetime) -> dict[str, Any]:
    return {
        "external_id": f"bench-{number}",
        "treatment": "microneedling",
        "starts_at": starts.isoformat(),
        "patient": {
            "first_name": "Pat",
            "last_name": f"N{number}",
            "phone": patient_phone(number),
            "email": f"p{number}@bench.example",
            "timezone": "UTC",
        },
    }


def seed_bookings(session: Session, clinic: Clinic, count: int, *, now: datetime, first: int = 0) -> None:
    """``count`` bookings whose treatment ended 90 minutes ago: each has its post-treatment SMS and email
    due now (two messages) and the rest of its care plan in the future."""
    starts = now - timedelta(minutes=150)
    for number in range(first, first + count):
        body = booking_body(number, starts=starts)
        command = BookingIn.model_validate(body).to_command(phone=body["patient"]["phone"])
        create_booking(session, clinic, command, now=now)
        if number % 200 == 199:
            session.commit()
    session.commit()


# ---- the production layout --------------------------------------------------------------------------------


@dataclass
class Layout:
    """Web, worker and beat processes with the shipped settings (only the URLs differ), the private Redis
    they share, and the fake providers."""

    workdir: Path
    database_url: str
    twilio: FakeTwilio
    smtp: FakeSMTP
    redis: PrivateRedis
    env_overrides: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    web_port: int = 0

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "BROKER_URL": self.redis.url,
            "DATA_DIR": str(self.workdir / "data"),
            "TWILIO_ACCOUNT_SID": self.twilio.account_sid,
            "TWILIO_AUTH_TOKEN": self.twilio.auth_token,
            "TWILIO_API_BASE_URL": self.twilio.url,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp.port),
            "SMTP_STARTTLS": "false",
            "PUBLIC_BASE_URL": "https://aftercare.example",
            "WATCHDOG_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
            **self.env_overrides,
        }

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        return process

    def start_workers(self) -> None:
        """The shipped workers: one process per core, each a pool of WORKER_CONCURRENCY threads, and the
        inbound worker on its own queue."""
        for number in range(1, get_settings().worker_processes + 1):
            self.start_worker(number)
        self.start_inbound_worker()

    def start_worker(self, number: int) -> None:
        settings = get_settings()
        name = f"worker-{number}"
        log = self.workdir / f"{name}.log"
        log.unlink(missing_ok=True)
        argv = worker_command(hostname=f"{name}-{uuid.uuid4().hex[:6]}@%h", pool=settings.WORKER_POOL,
                              concurrency=settings.WORKER_CONCURRENCY,
                              queues=f"{SEND_QUEUE},{DISPATCH_QUEUE}")  # fmt: skip
        self._start(name, argv)
        wait_for(lambda: log.exists() and " ready." in log.read_text(errors="replace"), timeout=60,
                 what=f"{name} to be ready")  # fmt: skip

    def start_inbound_worker(self) -> None:
        name = "inbound"
        log = self.workdir / f"{name}.log"
        log.unlink(missing_ok=True)
        concurrency = get_settings().INBOUND_CONCURRENCY
        argv = worker_command(hostname=f"{name}-{uuid.uuid4().hex[:6]}@%h", pool="threads",
                              concurrency=concurrency, queues=INBOUND_QUEUE)  # fmt: skip
        self._start(name, argv)
        wait_for(lambda: log.exists() and " ready." in log.read_text(errors="replace"), timeout=60,
                 what=f"{name} to be ready")  # fmt: skip

    def start_beat(self) -> None:
        self._start("beat", beat_command(schedule=self.workdir / "beat-schedule"))

    def start_web(self) -> str:
        """The shipped web processes (one per core); returns the base URL once /healthz answers."""
        import httpx

        self.web_port = free_port()
        argv = web_command(host="127.0.0.1", port=self.web_port, workers=get_settings().web_processes)
        self._start("web", argv)
        base = f"http://127.0.0.1:{self.web_port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, what="the web processes to answer")
        return base

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process of the layout."""
        return {name: cpu_seconds(p.pid) for name, p in self.processes.items() if p.poll() is None}

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


@contextmanager
def production(database_url: str, **env_overrides: str) -> Iterator[Layout]:
    """The fake providers and a private Redis, and a Layout to start processes in; stops everything."""
    with tempfile.TemporaryDirectory(prefix="aftercare-bench-") as tmp:
        workdir = Path(tmp)
        broker = PrivateRedis(workdir)
        broker.start()
        twilio = FakeTwilio(latency=TWILIO_LATENCY).start()
        smtp = FakeSMTP().start()
        layout = Layout(workdir, database_url, twilio, smtp, broker, dict(env_overrides))
        try:
            yield layout
        finally:
            layout.stop()
            twilio.stop()
            smtp.stop()
            broker.kill()


def serial_twilio_rate(twilio: FakeTwilio, count: int) -> float:
    """Messages a second from a plain loop of the bare Twilio client against the same fake server."""
    from twilio.rest import Client

    from service.channels.twilio.sms import TimeoutTwilioHttpClient

    # The bare client; its HTTP client only rewrites the host to the fake's, as TWILIO_API_BASE_URL does.
    http_client = TimeoutTwilioHttpClient(timeout=10, api_base_url=twilio.url)
    client = Client(twilio.account_sid, twilio.auth_token, http_client=http_client)
    started = time.perf_counter()
    for number in range(count):
        client.messages.create(to=f"+1917555{number:04d}", from_="+12125550100", body="serial baseline")
    return count / (time.perf_counter() - started)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
