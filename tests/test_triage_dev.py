"""The issue's five triage targets, measured on the labelled development set (tests/data/triage_dev.jsonl).

The held-out set is never read here: it stands in for the replies the lexicon was not tuned on. Speed is
measured by bench/triage_speed.py, not asserted (timings are noise on a shared machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.triage_eval import TARGETS, evaluate, format_report
from service.triage_rules import load_lexicon

DEV_SET = Path(__file__).resolve().parent / "data" / "triage_dev.jsonl"


@pytest.fixture(scope="module")
def report():
    if not DEV_SET.is_file():
        pytest.skip(f"{DEV_SET} is not there yet")
    rows = [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines() if line.strip()]
    return evaluate(rows, load_lexicon())


def _explain(report) -> str:
    return "\n" + format_report(report, show_errors=True)


def test_every_emergency_is_recognised(report):
    assert report["metrics"]["emergency_recall"] == 1.0, _explain(report)


def test_almost_every_emergency_or_urgent_reply_is_raised(report):
    assert report["metrics"]["emergency_or_urgent_recall"] >= TARGETS["emergency_or_urgent_recall"][1], (
        _explain(report)
    )


def test_few_routine_or_none_replies_are_raised(report):
    assert report["metrics"]["over_triage"] <= TARGETS["over_triage"][1], _explain(report)


def test_no_symptom_report_is_ever_taken_as_a_keyword(report):
    assert report["metrics"]["keyword_precision"] == 1.0, _explain(report)


def test_most_labels_are_exactly_right(report):
    assert report["metrics"]["accuracy"] >= TARGETS["accuracy"][1], _explain(report)
