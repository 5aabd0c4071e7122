"""A broken care plan stops every process that would use it, as it starts, with one line: `aftercare
migrate` (a deploy's release step), `aftercare serve`, the web process and the worker, each run for real
in a subprocess with PLANS_DIR pointing at a copy of the shipped plans with one template misspelt."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service.api.app import create_app
from service.settings import PROJECT_ROOT, Settings
from tests.stack import free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def broken_plans(tmp_path: Path) -> Path:
    """The shipped plans, with microneedling's day-3 warning naming a template that does not exist."""
    plans = tmp_path / "plans"
    shutil.copytree(PROJECT_ROOT / "templates" / "plans", plans)
    path = plans / "microneedling.toml"
    path.write_text(path.read_text().replace('template = "day3_warning"', 'template = "day3_warnings"'))
    return plans


def refusal(plans: Path) -> str:
    return (
        f'aftercare: care plan {plans / "microneedling.toml"}, step "day3_warning": '
        "no template messages/en/day3_warnings.sms.j2"
    )


def environment(tmp_path: Path, plans: Path) -> dict[str, str]:
    # The laptop set-up (SQLite, embedded broker, console channels), whatever the developer exported.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "TWILIO_ACCOUNT_SID", "SMTP_HOST", "SECRET_KEY")
    }
    return env | {
        "DATA_DIR": str(tmp_path / "data"),
        "PLANS_DIR": str(plans),
        "PYTHONPATH": str(PROJECT_ROOT),
    }


def run(argv: list[str], tmp_path: Path, plans: Path) -> subprocess.CompletedProcess[str]:
    """Run a command to its end. Should a regression let the process start and serve, the timeout stops
    it the way an operator would (SIGTERM: serve, uvicorn and Celery stop their children), then kills its
    process group: no test leaves a process behind."""
    process = subprocess.Popen(
        [sys.executable, *argv],
        env=environment(tmp_path, plans),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
                os.killpg(process.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def processes_started_with(marker: str) -> list[int]:
    """Processes whose environment mentions ``marker`` (the broken plans' folder): what a start-up that
    gave up half-way would leave behind."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def test_migrate_refuses_a_broken_plan_with_one_line_and_migrates_nothing(tmp_path: Path, broken_plans: Path):
    result = run(["-m", "service.cli", "migrate"], tmp_path, broken_plans)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [refusal(broken_plans)]
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # the release step stopped before touching the database


def test_migrate_passes_the_shipped_plans_read_from_plans_dir(tmp_path: Path):
    plans = tmp_path / "plans"
    shutil.copytree(PROJECT_ROOT / "templates" / "plans", plans)
    result = run(["-m", "service.cli", "migrate"], tmp_path, plans)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"migrated": true}'


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds leftover processes through /proc")
def test_serve_refuses_a_broken_plan_with_one_line_and_leaves_no_process_behind(
    tmp_path: Path, broken_plans: Path
):
    result = run(["-m", "service.cli", "serve", "--port", str(free_port())], tmp_path, broken_plans)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [refusal(broken_plans)]
    assert processes_started_with(str(broken_plans)) == []
    assert not (tmp_path / "data").exists()


def test_the_worker_refuses_a_broken_plan_with_one_line(tmp_path: Path, broken_plans: Path):
    result = run(
        [
            "-m",
            "celery",
            "-A",
            "tasks.app",
            "worker",
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
        ],
        tmp_path,
        broken_plans,
    )
    assert result.returncode != 0
    # Celery may warn first (e.g. about running as root); the refusal is the last word, without a traceback.
    assert result.stderr.splitlines()[-1] == refusal(broken_plans)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_the_web_process_refuses_a_broken_plan_with_one_line(
    tmp_path: Path, broken_plans: Path, workers: int
):
    argv = ["-m", "uvicorn", "--factory", "service.api.app:create_app", "--port", str(free_port())]
    result = run([*argv, "--workers", str(workers)], tmp_path, broken_plans)
    # One process: uvicorn's "failed before serving". Several: their supervisor stops rather than
    # restarting them for ever (it returns normally itself), and each worker said why.
    assert result.returncode == (3 if workers == 1 else 0)
    assert refusal(broken_plans) in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert "Application startup complete" not in result.stderr


def test_create_app_refuses_a_broken_plan(
    tmp_path: Path, broken_plans: Path, capsys: pytest.CaptureFixture[str]
):
    settings = Settings(_env_file=None, DATA_DIR=tmp_path / "data", PLANS_DIR=broken_plans)
    with pytest.raises(SystemExit) as stopped:
        create_app(settings)
    assert stopped.value.code == 3
    assert capsys.readouterr().err.splitlines() == [refusal(broken_plans)]
