"""`aftercare triage`: JSON lines in, JSON lines out, as docs/architecture.md#interface specifies."""

from __future__ import annotations

import json
import subprocess
import sys

from service.settings import PROJECT_ROOT


def run_triage(lines: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "triage"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60,
    )  # fmt: skip


def test_triage_reads_json_lines_and_writes_one_result_per_line():
    inputs = [
        {"text": "I have yellow pus and a fever", "day": 3},
        {"text": "STOP", "day": None},
        {"text": "stop texting me, my lips are swelling", "day": 0, "treatment": "microneedling"},
        {"text": "thanks!", "day": 1},
    ]
    result = run_triage([json.dumps(i) for i in inputs])
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["severity"] for o in outputs] == ["urgent", "none", "emergency", "none"]
    assert [o["keyword"] for o in outputs] == [None, "stop", "stop", None]
    finding = outputs[0]["findings"][0]
    assert set(finding) == {"concept", "words", "severity", "negated", "hypothetical", "historical"}


def test_a_bad_line_is_reported_and_the_rest_still_triaged():
    result = run_triage(["not json", json.dumps({"text": "tengo fiebre", "day": 2})])
    assert result.returncode == 0
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert "error" in first and second["severity"] == "urgent"
    assert "line 1" in result.stderr
