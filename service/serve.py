"""`aftercare serve`: web, worker and beat as one process group, the same layout as the Procfile.

Each part runs as its own process (as in production), started here and stopped here: Ctrl-C or SIGTERM
stops all three cleanly, and if one dies the others are stopped too, because a web process that accepts
bookings with no worker behind it is a silent failure.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from service.celery import DISPATCH_QUEUE, INBOUND_QUEUE, SEND_QUEUE
from service.clinics import clinics_without_first_level
from service.db import session_scope
from service.migrate import upgrade
from service.scheduling.care_plans import check_plans
from service.settings import get_settings

log = logging.getLogger("aftercare.serve")

STOP_GRACE_SECONDS = 20


def worker_command(*, hostname: str, pool: str, concurrency: int, queues: str) -> list[str]:
    # Without mingle and gossip: workers share nothing but the broker and the database, and a worker that
    # waits for its peers at start-up (or chatters with them) only starts and recovers more slowly.
    return [
        sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "--loglevel", "INFO",
        "--pool", pool, "--concurrency", str(concurrency), "--hostname", hostname, "--queues", queues,
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def web_command(*, host: str, port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--factory", "service.api.app:create_app",
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def beat_command(*, schedule: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.app",
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(schedule),
    ]


def commands(host: str, port: int) -> dict[str, list[str]]:
    """The process layout (docs/benchmarks.md#the-shipped-layout): web processes, one worker process per
    core with a pool of threads each, the inbound worker, and exactly one beat. The embedded set-up runs one
    web and one sending worker process: SQLite takes one writer at a time, so more processes would only queue
    for its lock."""
    settings = get_settings()
    web_processes = 1 if settings.embedded else settings.web_processes
    worker_processes = 1 if settings.embedded else settings.worker_processes
    layout = {"web": web_command(host=host, port=port, workers=web_processes)}
    for number in range(1, worker_processes + 1):
        layout[f"worker-{number}"] = worker_command(
            hostname=f"worker-{number}-{os.getpid()}@%h",
            pool=settings.WORKER_POOL,
            concurrency=settings.WORKER_CONCURRENCY,
            queues=f"{SEND_QUEUE},{DISPATCH_QUEUE}",
        )
    # What patients send is worked by a worker of its own: never behind a morning's scheduled sends.
    layout["inbound"] = worker_command(
        hostname=f"inbound-{os.getpid()}@%h",
        pool="threads",
        concurrency=settings.INBOUND_CONCURRENCY,
        queues=INBOUND_QUEUE,
    )
    layout["beat"] = beat_command(schedule=(settings.DATA_DIR / "celerybeat-schedule").resolve())
    return layout


def run(host: str = "127.0.0.1", port: int = 8000) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    # Before anything starts: a broken plan raises PlanError here, and no process is left behind. (The
    # web and worker processes check again as they start, for when they are run on their own.)
    check_plans()
    settings.ensure_data_dir()
    upgrade()
    _warn_unstaffed_clinics()
    log.info(
        "database %s, broker %s, SMS via %s, email via %s",
        settings.database_url.split("@")[-1],
        settings.broker_url.split("@")[-1],
        settings.sms_provider,
        settings.email_provider,
    )
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    for name, argv in commands(host, port).items():
        # A new session: Ctrl-C reaches only this process, which then stops the children in order.
        children[name] = subprocess.Popen(argv, start_new_session=True)
        log.info("started %s (pid %s)", name, children[name].pid)
    log.info("Aftercare is running at http://%s:%s (API docs at /docs). Ctrl-C stops it.", host, port)

    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                log.error("%s exited with code %s; stopping the others", name, child.returncode)
                exit_code = 1
                stopping = True
                break
        time.sleep(0.5)
    _stop_all(children)
    return exit_code


def _warn_unstaffed_clinics() -> None:
    with session_scope() as session:
        for clinic in clinics_without_first_level(session):
            log.warning(
                "clinic %s has no staff to page: urgent replies page nobody until you run "
                "`aftercare staff add --clinic %s --level 1 ...`",
                clinic.id,
                clinic.id,
            )


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, child in children.items():
        if child.poll() is None:
            log.info("stopping %s", name)
            child.send_signal(signal.SIGTERM)  # Celery: warm shutdown, finishes the task in hand
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %ss; killing it", name, STOP_GRACE_SECONDS)
            child.kill()
            child.wait()
