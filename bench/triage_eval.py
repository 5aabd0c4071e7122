"""Triage against a labelled set: the 5×5 confusion matrix and the five targets of the issue.

    .venv/bin/python bench/triage_eval.py [tests/data/triage_dev.jsonl] [--errors]

Each line of the file is ``{"text", "day", "treatment", "risk_flags" (optional), "label", "keyword"}``;
each row is triaged with its own risk flags. Prints the matrix (gold rows × predicted columns over
emergency/urgent/routine/none/keyword) and the metrics; ``--errors`` also lists every misclassified line
with the findings that led there. ``--classifier on|off`` overrides engine/classifier.toml's switch, to
measure the learned second opinion with and without. Exits 1 when a target is missed, so it can gate a
change to the lexicon. The computation is ``service.triage.evaluation.evaluate`` (a test uses it too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.triage.evaluation import evaluate, format_report  # noqa: E402
from service.triage.lexicon import Lexicon  # noqa: E402
from service.triage.loader import load_lexicon  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "triage_dev.jsonl"


def read_rows(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{number}: not JSON: {exc}") from exc
    return rows


def with_classifier(lexicon: Lexicon, *, enabled: bool) -> Lexicon:
    """The same lexicon with the learned second opinion switched on or off (for measuring it)."""
    return dataclasses.replace(lexicon, classifier=dataclasses.replace(lexicon.classifier, enabled=enabled))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path", nargs="?", type=Path, default=DEFAULT_DATA, help="a JSONL file of labelled replies"
    )
    parser.add_argument("--errors", action="store_true", help="list every misclassified line")
    parser.add_argument("--lexicon", type=Path, default=None, help="a directory of triage TOML files")
    parser.add_argument(
        "--classifier",
        choices=("on", "off"),
        default=None,
        help="switch the learned second opinion on or off",
    )
    args = parser.parse_args(argv)
    lexicon = load_lexicon(args.lexicon)
    if args.classifier is not None:
        lexicon = with_classifier(lexicon, enabled=args.classifier == "on")
    report = evaluate(read_rows(args.path), lexicon)
    print(format_report(report, show_errors=args.errors))
    return 0 if all(report["passed"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
