"""The shape of the code base, held by tests: layers only import downward (import-linter's contracts in
pyproject.toml), only ``service.outbox`` writes an outbox row's status, only ``service.paging.lifecycle``
writes an escalation or its steps, and importing ``service`` builds nothing (no Celery app, no database
engine, no file)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter import api as importlinter_api

from service.settings import PROJECT_ROOT

SERVICE = PROJECT_ROOT / "service"
OUTBOX = SERVICE / "outbox"
# Other tables have a status of their own, owned by the module that changes them.
OTHER_STATUS_OWNERS = {"booking", "escalation"}
PAGING_LIFECYCLE = SERVICE / "paging" / "lifecycle.py"
ESCALATION_MODELS = {"Escalation", "EscalationStep"}
# Columns only an escalation has: any assignment to one, whatever the variable is called, is a write.
ESCALATION_COLUMNS = {
    "active_step_id", "first_paged_at", "acknowledged_at", "acknowledged_by_id", "acknowledged_via",
    "resolved_at", "resolved_by_id", "resolution_note",
}  # fmt: skip
# Columns other rows have too (a message has a severity, a booking a status): a write when the object is
# named for an escalation or a step (``escalation.status = ...``, ``existing_escalation.severity = ...``).
SHARED_COLUMNS = {"status", "severity"}
ESCALATION_SQL = re.compile(r"\b(update|insert\s+into|delete\s+from)\s+escalation", re.IGNORECASE)


def _python_files(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*.py"))


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter's contracts over the packages under ``root`` (the project, or a copy of it)."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_layer_imports_only_the_layers_below_it():
    result = _lint_imports(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    contracts = importlinter_api.read_configuration(str(PROJECT_ROOT / "pyproject.toml"))["contracts_options"]
    assert {c["id"] for c in contracts} == {"layers", "pure", "sending"}


# One import per rule docs/architecture.md states, planted in a copy of the code base: each must break
# the contract named beside it, or that contract no longer says what the document does.
PLANTED_IMPORTS = {
    "triage reads the database's models": ("service/triage/decide.py", "import service.models", "pure"),
    "triage opens the database": ("service/triage/match.py", "import service.db", "pure"),
    "the core uses SQLAlchemy": ("service/core/plans.py", "import sqlalchemy", "pure"),
    "the core talks to Twilio": ("service/core/phones.py", "import twilio", "pure"),
    "triage calls an HTTP client": ("service/triage/normalise.py", "import httpx", "pure"),
    "triage sends through a channel": ("service/triage/keywords.py", "import service.channels", "pure"),
    "sending knows pages": ("service/sending/send.py", "import service.paging.purpose", "sending"),
    "sending knows the wiring of purposes": (
        "service/sending/failure.py",
        "import service.wiring",
        "sending",
    ),
    "the outbox knows answers": ("service/outbox/lifecycle.py", "import service.replies.purpose", "sending"),
    "sending knows care plans' scheduling": (
        "service/sending/retry.py",
        "import service.scheduling",
        "layers",
    ),
    "the outbox reaches up to a task": ("service/outbox/dispatch.py", "import tasks.send", "layers"),
}


@pytest.mark.parametrize("planted", sorted(PLANTED_IMPORTS))
def test_each_import_contract_fails_on_a_planted_violation(planted: str, tmp_path: Path):
    path, line, contract = PLANTED_IMPORTS[planted]
    for package in ("service", "tasks"):
        shutil.copytree(
            PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / path
    target.write_text(target.read_text() + f"\n{line}  # planted\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, f"{planted}: `{line}` in {path} broke no contract\n{result.stdout[-2000:]}"
    names = {
        c["id"]: c["name"]
        for c in importlinter_api.read_configuration(str(tmp_path / "pyproject.toml"))["contracts_options"]
    }
    broken = " ".join(result.stdout.split())
    assert f"{' '.join(names[contract].split())} BROKEN" in broken, broken[-2000:]


def _status_writes(path: Path) -> list[str]:
    """Places in one file that write an outbox row's status or create an outbox row."""
    found: list[str] = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            args = [a.id for a in node.args if isinstance(a, ast.Name)]
            if name in ("update", "insert") and {"ScheduledMessage", "SM"} & set(args):
                found.append(f"{path.name}:{node.lineno} {name}({args[0]})")
            if name == "ScheduledMessage":
                found.append(f"{path.name}:{node.lineno} ScheduledMessage(...)")
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "status":
                owner = target.value.id if isinstance(target.value, ast.Name) else "?"
                if owner not in OTHER_STATUS_OWNERS:
                    found.append(f"{path.name}:{node.lineno} {owner}.status = ...")
    return found


def test_only_the_outbox_package_writes_an_outbox_rows_status():
    outside = [p for p in _python_files(SERVICE, PROJECT_ROOT / "tasks") if OUTBOX not in p.parents]
    writes = [write for path in outside for write in _status_writes(path)]
    assert writes == [], "outbox status is written only by service.outbox.lifecycle:\n" + "\n".join(writes)
    # The check finds what it looks for: the outbox itself does all of it.
    assert _status_writes(OUTBOX / "lifecycle.py")


def _last_name(node: ast.expr) -> str:
    """The name an expression ends with: ``escalation`` for ``escalation`` and for ``page.escalation``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return "?"


def _names_in(node: ast.expr) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _escalation_writes(path: Path) -> list[str]:
    """Places in one file that create an escalation or a step, or write either's state: the ORM (a
    constructor, an attribute, ``setattr``), Core (``update``, ``insert``, ``delete``) or raw SQL."""
    found: list[str] = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            name = _last_name(node.func)
            touched = set().union(*(_names_in(a) for a in node.args)) if node.args else set()
            if name in ("update", "insert", "delete") and ESCALATION_MODELS & touched:
                found.append(f"{where} {name}({', '.join(sorted(ESCALATION_MODELS & touched))})")
            if name in ESCALATION_MODELS:
                found.append(f"{where} {name}(...)")
            column = node.args[1] if name == "setattr" and len(node.args) >= 2 else None
            if isinstance(column, ast.Constant) and column.value in ESCALATION_COLUMNS | SHARED_COLUMNS:
                found.append(f"{where} setattr(..., {column.value!r}, ...)")
        text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
        if sql := ESCALATION_SQL.search(text):
            found.append(f"{where} SQL {sql.group(0)!r}")
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if not isinstance(target, ast.Attribute):
                continue
            owner = _last_name(target.value).lower()
            if target.attr in ESCALATION_COLUMNS or (
                target.attr in SHARED_COLUMNS and ("escalation" in owner or "step" in owner)
            ):
                found.append(f"{where} {_last_name(target.value)}.{target.attr} = ...")
    return found


def test_only_the_paging_lifecycle_writes_an_escalation_or_its_steps():
    outside = [p for p in _python_files(SERVICE, PROJECT_ROOT / "tasks") if p != PAGING_LIFECYCLE]
    writes = [write for path in outside for write in _escalation_writes(path)]
    assert writes == [], "escalations are written only by service.paging.lifecycle:\n" + "\n".join(writes)
    # The check finds what it looks for: the lifecycle itself does all of it.
    assert _escalation_writes(PAGING_LIFECYCLE)


PLANTED_ESCALATION_WRITES = {
    "escalation.status = EscalationStatus.OPEN": "escalation.status = ...",
    "existing.active_step_id = step.id": "existing.active_step_id = ...",
    "found.resolved_at = None": "found.resolved_at = ...",
    "step.status = StepStatus.PAGED": "step.status = ...",
    "self.escalation.severity = severity": "escalation.severity = ...",
    "setattr(row, 'acknowledged_at', now)": "setattr(..., 'acknowledged_at', ...)",
    "session.execute(update(Escalation).values(status='open'))": "update(Escalation)",
    "session.execute(sa.update(EscalationStep.__table__).values(status='pending'))": "update(EscalationStep)",
    "session.add(Escalation(clinic_id=1))": "Escalation(...)",
    "session.execute(text('UPDATE escalation SET status = :s'))": "SQL 'UPDATE escalation'",
}


@pytest.mark.parametrize("planted", sorted(PLANTED_ESCALATION_WRITES))
def test_the_escalation_check_finds_a_write_planted_anywhere(planted: str, tmp_path: Path):
    path = tmp_path / "planted.py"
    path.write_text(
        f"def f(session, escalation, existing, found, step, row, self, severity, now):\n    {planted}\n"
    )
    [write] = _escalation_writes(path)
    assert write.endswith(PLANTED_ESCALATION_WRITES[planted]), write


def test_the_escalation_check_leaves_other_rows_alone(tmp_path: Path):
    path = tmp_path / "innocent.py"
    path.write_text(
        "def f(session, message, booking, result, escalation):\n"
        "    message.severity = result.severity\n"
        "    booking.status = 'cancelled'\n"
        "    message.escalation_id = escalation.id\n"
        "    session.execute(update(Clinic).values(next_ack_code=2))\n"
        "    select(Escalation).where(Escalation.status == 'open')\n"
    )
    assert _escalation_writes(path) == []


IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import service
names = sorted(m.name for m in pkgutil.walk_packages(service.__path__, "service."))
for name in names:
    importlib.import_module(name)
from celery import _state
from sqlalchemy import event
from sqlmodel import Session
from service import db
from service.celery import _send_pending_tasks
apps = [app.main for app in list(_state._apps)]
print(json.dumps({
    "modules": len(names),
    "celery_apps": apps,
    "engines": db.get_engine.cache_info().currsize,
    "session_listeners": event.contains(Session, "after_commit", _send_pending_tasks),
}))
"""


def test_importing_every_service_module_builds_nothing(tmp_path: Path):
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] > 40
    assert report["celery_apps"] == [], "a Celery app was built at import time"
    assert report["engines"] == 0, "a database engine was created at import time"
    assert report["session_listeners"] is False, "session hooks were installed at import time"
    assert list(tmp_path.iterdir()) == [], "importing service wrote files"


def test_every_service_package_says_what_it_owns():
    for init in sorted(SERVICE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 15, f"{init.parent.name}/ needs a paragraph saying what it owns"
