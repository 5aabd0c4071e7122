"""The issue's five triage targets, held on every labelled set we have.

The dev set was tuned on from the start; each holdout set, and sets A and B, was measured once untouched
(docs/triage.md records those honest numbers) and then tuned on, so all six now guard against
regressions. Rows are triaged with their own intake risk flags. bench/data/triage_untouched.jsonl is never
read here: it is the final honest measure. Speed is measured by bench/triage_speed.py, not asserted
(timings are noise on a shared machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.triage.evaluation import TARGETS, evaluate, format_report
from service.triage.loader import load_lexicon

DATA = Path(__file__).resolve().parent / "data"
LABELLED_SETS = [
    "triage_dev.jsonl",
    "triage_holdout.jsonl",
    "triage_holdout2.jsonl",
    "triage_holdout3.jsonl",
    "triage_set_a.jsonl",
    "triage_set_b.jsonl",
]


@pytest.fixture(scope="module", params=LABELLED_SETS)
def report(request):
    path = DATA / request.param
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
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
