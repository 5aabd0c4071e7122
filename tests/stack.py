"""Real processes for end-to-end tests: Celery workers and beat as `aftercare serve` runs them, a private
redis-server when a test must restart one, all with shortened intervals instead of sleeps."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.celery import DISPATCH_QUEUE, INBOUND_QUEUE, SEND_QUEUE
from service.core.quiet_hours import QuietHours
from service.serve import beat_command, worker_command
from service.settings import PROJECT_ROOT, psycopg_url

# Patient timezones for tests that run real processes against the real clock: every hour of the day is
# daytime in one of them (no more than two hours apart), New York first because it reads naturally.
DAYTIME_CANDIDATES = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Anchorage",
    "Pacific/Honolulu", "Pacific/Pago_Pago", "Pacific/Kiritimati", "Pacific/Auckland", "Australia/Sydney",
    "Asia/Tokyo", "Asia/Shanghai", "Asia/Bangkok", "Asia/Dhaka", "Asia/Karachi", "Asia/Dubai",
    "Europe/Moscow", "Europe/Athens", "Europe/Paris", "Europe/London", "Atlantic/Azores",
    "America/Noronha", "America/Sao_Paulo", "America/Halifax",
)  # fmt: skip
# A test may take a few minutes; its SMS must not reach the end of the day while it runs.
DAYTIME_MARGIN = timedelta(hours=3)


def daytime_timezone(now: datetime, quiet_hours: QuietHours = QuietHours.parse("21:00-08:00")) -> str:
    """A patient timezone where an SMS may go at ``now`` and for the next three hours: tests with real
    processes book their patients there, so they pass at any hour of the wall clock."""
    for name in DAYTIME_CANDIDATES:
        if all(
            quiet_hours.next_allowed(moment, name) == moment
            for moment in (now, now + DAYTIME_MARGIN / 2, now + DAYTIME_MARGIN)
        ):
            return name
    raise AssertionError(f"no daytime timezone at {now.isoformat()} for quiet hours {quiet_hours}")


# Intervals shortened so a test sees a lost task, a stuck send and an unknown outcome settled in seconds.
FAST_INTERVALS = {
    "DISPATCH_INTERVAL_SECONDS": "0.5",
    "QUEUED_STALE_SECONDS": "4",
    "INBOUND_STALE_SECONDS": "4",
    "SENDING_STALE_SECONDS": "4",
    "UNKNOWN_GRACE_SECONDS": "2",
    # Longer than the fake Twilio's late acceptance in the fault suite (8 s), as 120 s is in production.
    "SEND_SETTLE_WINDOW_SECONDS": "12",
    "RETRY_BACKOFF_BASE_SECONDS": "1",
    "RETRY_BACKOFF_MAX_SECONDS": "2",
    "TWILIO_TIMEOUT_SECONDS": "3",
    "SMTP_TIMEOUT_SECONDS": "3",
    "DATABASE_IDLE_TRANSACTION_SECONDS": "10",
}


@contextmanager
def new_postgres_database(server_url: str, *, prefix: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at ``server_url``; yields its URL, dropped after
    (with FORCE: connections still open to it are cut)."""
    admin_url = make_url(psycopg_url(server_url))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Stack:
    """Starts and stops the worker and beat processes of one test; logs go to files under ``workdir``."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = {**os.environ, **FAST_INTERVALS, **env, "PYTHONUNBUFFERED": "1"}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(
        self, name: str, argv: list[str], *, host: Host | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        command = (host.prefix if host else []) + argv
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        return process

    def start_worker(
        self,
        name: str = "worker",
        *,
        concurrency: int = 2,
        queues: str | None = None,
        host: Host | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A worker as `aftercare serve` starts it (threads pool), taking every queue — the sends, the
        dispatcher's passes and what patients send — unless ``queues`` limits what it takes
        (``"dispatch"``: only the dispatcher's passes, so the send tasks they queue wait)."""
        hostname = f"{name}-{os.getpid()}@%h"
        every = f"{SEND_QUEUE},{DISPATCH_QUEUE},{INBOUND_QUEUE}"
        argv = worker_command(
            hostname=hostname, pool="threads", concurrency=concurrency, queues=queues or every
        )
        return self._start(name, argv, host=host, env=env)

    def wait_ready(self, name: str = "worker", timeout: float = 60) -> None:
        """Until the worker says it is ready to take tasks (its start-up is not part of what a test times)."""
        log = self.workdir / f"{name}.log"
        wait_for(lambda: log.exists() and " ready." in log.read_text(errors="replace"), timeout=timeout,
                 what=f"{name} to be ready")  # fmt: skip

    def start_beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        return self._start(name, beat_command(schedule=self.workdir / f"{name}-schedule"))

    def kill(self, name: str) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement, as when the machine loses power."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.workdir.glob("*.log"))
        )


class PrivateRedis:
    """A redis-server of the test's own, without persistence, that the test may kill and restart."""

    def __init__(self, workdir: Path, *, bind: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.workdir = workdir
        self.bind = bind
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                self.bind,
                "--protected-mode",
                "no" if self.bind != "127.0.0.1" else "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._pong, timeout=10, what="redis-server to answer")

    def _pong(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def queued_tasks(self) -> int:
        return int(redis.Redis(port=self.port).llen("celery"))


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app behind a real socket (uvicorn in a thread), for tests that need real concurrent requests
    or a provider posting to us; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def at_the_same_moment(count: int, action: Callable[[], Any]) -> list[Any]:
    """Run ``action`` in ``count`` threads released together; their results, in finishing order."""
    barrier = threading.Barrier(count)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        results.append(action())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class ThrowawayPostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary directory, another port), which the test
    may restart; never the shared one. Runs as the ``postgres`` user when the test runs as root."""

    def __init__(self, *, listen: str = "127.0.0.1") -> None:
        self.listen = listen
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="aftercare-pg-"))
        self.logfile = self.datadir.parent / f"{self.datadir.name}.log"
        self.bindir = self._bindir()

    @staticmethod
    def _bindir() -> Path | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        return found[-1].parent if found else None

    @classmethod
    def available(cls) -> bool:
        return cls._bindir() is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        assert self.bindir is not None
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        if not (self.datadir / "PG_VERSION").exists():
            if os.geteuid() == 0:
                shutil.chown(self.datadir, "postgres", "postgres")
                self.logfile.touch()
                shutil.chown(self.logfile, "postgres", "postgres")
            self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
            if self.listen != "127.0.0.1":  # the test's own network namespaces reach it from outside
                with open(self.datadir / "pg_hba.conf", "a") as hba:
                    hba.write("host all all 0.0.0.0/0 trust\n")
        options = (
            f"-p {self.port} -c listen_addresses={self.listen} -c unix_socket_directories={self.datadir} "
            "-c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", options, "-w", "start")

    def restart(self) -> None:
        """A fast shutdown (every connection cut) and a start, as a failover or an upgrade does."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        self.start()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.logfile.unlink(missing_ok=True)


class Host:
    """A second machine for a test: a network namespace joined to this one by a veth pair. Processes run
    in it with ``prefix``; they reach this namespace's servers at ``gateway``; ``cut()`` unplugs it."""

    def __init__(self, name: str, subnet: int) -> None:
        self.name = f"ac{os.getpid() % 100000}{name}"
        self.outside, self.inside = f"{self.name}o", f"{self.name}i"
        self.gateway, self.address = f"10.231.{subnet}.1", f"10.231.{subnet}.2"

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and shutil.which("ip") is not None

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def create(self) -> Host:
        for command in (
            f"ip netns add {self.name}",
            f"ip link add {self.outside} type veth peer name {self.inside}",
            f"ip link set {self.inside} netns {self.name}",
            f"ip addr add {self.gateway}/24 dev {self.outside}",
            f"ip link set {self.outside} up",
            f"ip netns exec {self.name} ip addr add {self.address}/24 dev {self.inside}",
            f"ip netns exec {self.name} ip link set {self.inside} up",
            f"ip netns exec {self.name} ip link set lo up",
        ):
            subprocess.run(command.split(), check=True, capture_output=True, timeout=10)
        return self

    def cut(self) -> None:
        """The cable pulled: nothing in or out, and the processes inside keep running."""
        subprocess.run(["ip", "link", "set", self.outside, "down"], check=True, timeout=10)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
