"""Triage of replies a second on one core: every labelled development reply, repeated to 20,000 (quick:
5,000), after one warm-up pass; and the once-per-process compile of the lexicon.

    .venv/bin/python bench/run.py --only triage [--quick]
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import record
from bench.triage_eval import DEFAULT_DATA, read_rows
from service.triage import triage
from service.triage.loader import clear_lexicon_cache, load_lexicon


def run(*, quick: bool) -> dict[str, Any]:
    rows = read_rows(DEFAULT_DATA)
    wanted = 5_000 if quick else 20_000
    work = [(r["text"], r.get("day"), r.get("treatment"), r.get("risk_flags") or ()) for r in rows]
    work = (work * (-(-wanted // len(work))))[:wanted]
    clear_lexicon_cache()
    started = time.perf_counter()
    lexicon = load_lexicon()
    compiled = time.perf_counter() - started
    for text, day, treatment, flags in work[: len(rows)]:
        triage(text, day=day, lexicon=lexicon, treatment=treatment, risk_flags=flags)
    started = time.process_time()
    for text, day, treatment, flags in work:
        triage(text, day=day, lexicon=lexicon, treatment=treatment, risk_flags=flags)
    cpu = time.process_time() - started
    return record(
        "triage",
        replies=len(work),
        per_second_one_core=len(work) / cpu,
        microseconds_per_reply=1e6 * cpu / len(work),
        lexicon_compile_seconds=compiled,
        target_per_second=1000,
    )
