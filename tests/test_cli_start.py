"""`aftercare --help` and every `aftercare <command> --help` answer from argparse alone.

Building the parser must not load a command's work: the database, broker, provider and web libraries and
the triage lexicon cost seconds on a cold start and are imported inside the command that needs them
(docs/architecture.md#interface). Checked by what ends up in ``sys.modules``, not by timing.
"""

from __future__ import annotations

import json
import subprocess
import sys

from service.settings import PROJECT_ROOT

# Libraries only a command's work needs, and the triage lexicon (compiled on import of its module).
HEAVY = (
    "sqlalchemy", "sqlmodel", "alembic", "celery", "kombu", "redis", "psycopg", "twilio", "fastapi",
    "starlette", "uvicorn", "jinja2", "rapidfuzz", "pydantic", "phonenumbers", "httpx",
    "service.triage.lexicon",
)  # fmt: skip

# Runs in a fresh interpreter: asks for the help of every command the parser has (found by walking it, so
# a new command is covered without editing this test), plus a usage error, and after each one reports the
# heavy modules loaded so far, with our own modules loaded so far to point at the culprit.
PROBE = """
import argparse, contextlib, io, json, sys

import service.cli

heavy = tuple(sys.argv[1:])


def command_paths(parser, path=()):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_paths(sub, (*path, name))


def heavy_loaded():
    # One name per library: the package, not its hundred submodules.
    return sorted({name if name in heavy else name.partition(".")[0] for name in sys.modules
                   if name in heavy or name.partition(".")[0] in heavy})


def ours_loaded():
    # The packages directly under service (service.clinics, ...): enough to find the import.
    return sorted({".".join(name.split(".")[:2]) for name in sys.modules
                   if name.startswith("service.") and name != "service.cli"})


report = []
for argv in [[*path, "--help"] for path in command_paths(service.cli.build_parser())] + [["clinic"]]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            service.cli.main(argv)
        except SystemExit:
            pass
    report.append({"argv": argv, "heavy": heavy_loaded(), "ours": ours_loaded()})
print(json.dumps(report))
"""


def test_help_of_every_command_loads_no_commands_work():
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *HEAVY], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    asked = [" ".join(step["argv"]) for step in report]
    # The walk found the commands (a probe that asked nothing would pass vacuously).
    assert {"--help", "clinic create --help", "staff add --help", "triage --help", "clinic"} <= set(asked)
    for step in report:
        assert not step["heavy"], (
            f"`aftercare {' '.join(step['argv'])}` loaded {', '.join(step['heavy'])} "
            f"(our modules loaded by then: {', '.join(step['ours']) or 'none'}); import a command's work "
            "inside its cmd_* function, not at the top of service/cli.py"
        )
