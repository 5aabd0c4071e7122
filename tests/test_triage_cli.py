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


def test_risk_flags_per_line_change_the_reading():
    lines = [
        {"text": "my lip is tingling a bit", "day": 0},
        {"text": "my lip is tingling a bit", "day": 0, "risk_flags": ["cold_sore_history"]},
        {"text": "my lip is tingling a bit", "day": 0, "risk_flags": []},
    ]
    result = run_triage([json.dumps(line) for line in lines])
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["severity"] for o in outputs] == ["routine", "urgent", "routine"]
    assert set(outputs[1]) == {"severity", "keyword", "findings"}


def test_an_unknown_risk_flag_is_that_lines_error_naming_the_allowed_values():
    lines = [
        json.dumps({"text": "hi", "day": 1, "risk_flags": ["asthma"]}),
        json.dumps({"text": "hi", "day": 1, "risk_flags": "eczema"}),
        json.dumps({"text": "tengo fiebre", "day": 2, "risk_flags": ["diabetes"]}),
    ]
    result = run_triage(lines)
    assert result.returncode == 0
    first, second, third = (json.loads(line) for line in result.stdout.splitlines())
    assert "asthma" in first["error"] and "eczema, psoriasis" in first["error"]
    assert "risk_flags" in second["error"]
    assert third["severity"] == "urgent"
    assert "line 1" in result.stderr and "line 2" in result.stderr
