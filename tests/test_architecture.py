"""The shape of the code base, held by tests: layers only import downward (import-linter's contracts in
pyproject.toml), only ``service.outbox`` writes an outbox row's status, and importing ``service`` builds
nothing (no Celery app, no database engine, no file)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from importlinter import api as importlinter_api

from service.settings import PROJECT_ROOT

SERVICE = PROJECT_ROOT / "service"
OUTBOX = SERVICE / "outbox"
# Other tables have a status of their own, owned by the module that changes them.
OTHER_STATUS_OWNERS = {"booking", "escalation"}


def _python_files(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*.py"))


def test_every_layer_imports_only_the_layers_below_it():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    contracts = importlinter_api.read_configuration(str(PROJECT_ROOT / "pyproject.toml"))["contracts_options"]
    assert {c["type"] for c in contracts} >= {"layers", "forbidden"}


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
