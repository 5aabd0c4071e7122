"""Scoring triage against labelled replies: the confusion matrix and the five targets of the issue.

Pure apart from what it is given (rows already read, a compiled lexicon), so a test and the command line
(``bench/triage_eval.py``) compute exactly the same numbers.

A row is ``{"text", "day", "treatment", "risk_flags" (optional), "label", "keyword"}``. Labels live in one
space of five: emergency, urgent, routine, none, keyword. A prediction is put in that space the way staff
see it: an emergency or urgent severity wins over any keyword (the clinician is paged even if the patient
also said "stop texting me"); otherwise a keyword, if any; otherwise the severity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from service.core.enums import ALARMING, Severity
from service.triage import Lexicon, TriageResult, triage

LABELS: tuple[str, ...] = ("emergency", "urgent", "routine", "none", "keyword")
RAISED = frozenset(str(s) for s in ALARMING)
LOW = frozenset({str(Severity.ROUTINE), str(Severity.NONE)})

# name → (comparison, threshold), from the issue. "min": the metric must be ≥ it; "max": ≤ it.
TARGETS: dict[str, tuple[str, float]] = {
    "emergency_recall": ("min", 1.0),
    "emergency_or_urgent_recall": ("min", 0.98),
    "over_triage": ("max", 0.10),
    "keyword_precision": ("min", 1.0),
    "accuracy": ("min", 0.90),
}


def predicted_label(result: TriageResult) -> str:
    if result.severity in RAISED:
        return result.severity
    if result.keyword is not None:
        return "keyword"
    return result.severity


def gold_label(row: Mapping[str, Any]) -> str:
    """The row's label in the five-label space (a row may give a severity plus a keyword instead)."""
    label: str = row["label"]
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r} in {row!r}")
    if label in LOW and row.get("keyword"):
        return "keyword"
    return label


def triage_row(row: Mapping[str, Any], lexicon: Lexicon) -> TriageResult:
    """Triage one labelled row as the service would: its text, day, treatment and intake risk flags."""
    return triage(
        row["text"],
        day=row.get("day"),
        lexicon=lexicon,
        treatment=row.get("treatment"),
        risk_flags=row.get("risk_flags") or (),
    )


def evaluate(rows: Iterable[Mapping[str, Any]], lexicon: Lexicon) -> dict[str, Any]:
    """Confusion matrix (gold rows × predicted columns), the five metrics, and the misclassified rows."""
    confusion = {gold: dict.fromkeys(LABELS, 0) for gold in LABELS}
    errors: list[dict[str, Any]] = []
    count = 0
    for index, row in enumerate(rows, start=1):
        result = triage_row(row, lexicon)
        gold, predicted = gold_label(row), predicted_label(result)
        confusion[gold][predicted] += 1
        count += 1
        if gold != predicted:
            errors.append(
                {"line": index, "row": dict(row), "gold": gold, "predicted": predicted, "result": result}
            )
    metrics = _metrics(confusion, count)
    return {
        "count": count,
        "labels": LABELS,
        "confusion": confusion,
        "metrics": metrics,
        "passed": {name: meets_target(name, value) for name, value in metrics.items()},
        "errors": errors,
    }


def meets_target(name: str, value: float) -> bool:
    comparison, threshold = TARGETS[name]
    return value >= threshold if comparison == "min" else value <= threshold


def _metrics(confusion: Mapping[str, Mapping[str, int]], count: int) -> dict[str, float]:
    def total(golds: Iterable[str], predicted: Iterable[str]) -> int:
        predicted = tuple(predicted)
        return sum(confusion[g][p] for g in golds for p in predicted)

    gold_emergency = total(["emergency"], LABELS)
    gold_raised = total(RAISED, LABELS)
    gold_low = total(LOW, LABELS)
    predicted_keyword = total(LABELS, ["keyword"])
    return {
        # An empty denominator meets the target: there was nothing to miss.
        "emergency_recall": _ratio(confusion["emergency"]["emergency"], gold_emergency, 1.0),
        "emergency_or_urgent_recall": _ratio(total(RAISED, RAISED), gold_raised, 1.0),
        "over_triage": _ratio(total(LOW, RAISED), gold_low, 0.0),
        "keyword_precision": _ratio(confusion["keyword"]["keyword"], predicted_keyword, 1.0),
        "accuracy": _ratio(sum(confusion[label][label] for label in LABELS), count, 1.0),
    }


def _ratio(numerator: int, denominator: int, empty: float) -> float:
    return numerator / denominator if denominator else empty


def format_report(report: Mapping[str, Any], *, show_errors: bool = False) -> str:
    """The matrix, the metrics against their targets and, optionally, every misclassified row."""
    labels = report["labels"]
    width = max(len(label) for label in labels) + 2
    lines = [f"{report['count']} replies; rows: gold, columns: predicted", ""]
    lines.append("".ljust(width) + "".join(label.rjust(width) for label in labels))
    for gold in labels:
        cells = "".join(str(report["confusion"][gold][p]).rjust(width) for p in labels)
        lines.append(gold.ljust(width) + cells)
    lines.append("")
    for name, value in report["metrics"].items():
        comparison, threshold = TARGETS[name]
        sign = "≥" if comparison == "min" else "≤"
        verdict = "ok" if report["passed"][name] else "MISSED"
        lines.append(f"{name:<28}{value:8.4f}   target {sign} {threshold:<5}  {verdict}")
    if show_errors and report["errors"]:
        lines.append("")
        lines.append(f"{len(report['errors'])} misclassified:")
        for error in report["errors"]:
            row, result = error["row"], error["result"]
            found = ", ".join(
                f"{f.concept}:{f.severity}"
                + "".join(
                    f"/{flag}" for flag in ("negated", "hypothetical", "historical") if getattr(f, flag)
                )
                for f in result.findings
            )
            flags = f" risk {','.join(row['risk_flags'])}" if row.get("risk_flags") else ""
            lines.append(
                f"  line {error['line']:>4}  gold {error['gold']:<9} got {error['predicted']:<9} "
                f"day {row.get('day')!s:<4}{flags} {row['text']!r}"
            )
            lines.append(f"{'':>17}findings: {found or '(none)'}; keyword: {result.keyword}")
    return "\n".join(lines)
