"""How many replies a second triage handles on one core.

    .venv/bin/python bench/triage_speed.py [tests/data/triage_dev.jsonl] [--min-replies 20000]

Runs the dev set (or any labelled set, with each row's risk flags), repeated until at least
``--min-replies`` replies, through ``triage`` in one thread (Python runs it on one core) and prints the
rate. The red-flag screen and the learned second opinion run as in production. The lexicon is compiled
once before timing, as a worker does at start-up; one warm-up pass fills the token cache the way a
long-running worker has it filled. The issue asks for at least 1,000 replies a second. Not a test: no
assertion on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.triage_eval import DEFAULT_DATA, read_rows  # noqa: E402
from service.triage import triage  # noqa: E402
from service.triage.loader import load_lexicon  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--min-replies", type=int, default=20_000)
    args = parser.parse_args(argv)

    rows = read_rows(args.path)
    if not rows:
        raise SystemExit(f"{args.path}: no replies")
    repeats = -(-args.min_replies // len(rows))  # ceiling division
    work = [(r["text"], r.get("day"), r.get("treatment"), r.get("risk_flags") or ()) for r in rows] * repeats

    started = time.perf_counter()
    lexicon = load_lexicon()
    compiled = time.perf_counter() - started
    for text, day, treatment, flags in work[: len(rows)]:  # warm-up
        triage(text, day=day, lexicon=lexicon, treatment=treatment, risk_flags=flags)

    started = time.perf_counter()
    for text, day, treatment, flags in work:
        triage(text, day=day, lexicon=lexicon, treatment=treatment, risk_flags=flags)
    elapsed = time.perf_counter() - started

    rate = len(work) / elapsed
    print(f"{len(work)} replies in {elapsed:.3f} s: {rate:,.0f} replies/s on one core")
    print(f"(lexicon compiled in {compiled * 1000:.0f} ms, once per process; {1e6 / rate:.0f} µs per reply)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
