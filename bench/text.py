"""Text as it comes, at its worst: a long run of punctuation, newlines or quote marks through everything
the inbound worker runs over a message — the carrier-keyword check, the new words of an email, triage —
old shapes beside new, side by side in one run.

    .venv/bin/python bench/run.py --only text [--quick]

The old carrier-keyword check (a regular expression stripping punctuation at both ends) is quadratic: it
is timed at 8 KB and 64 KB only; everything else at 1 MB.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from bench.harness import record
from service.channels.email_text import new_text
from service.triage import triage
from service.triage.keywords import COMPLIANCE_KEYWORDS, compliance_keyword
from service.triage.loader import load_lexicon

_OLD_EDGE = re.compile(r"^[\W_]+|[\W_]+$")


def old_keyword(text: str) -> object:
    """The check as it was (for the side-by-side figure only)."""
    return COMPLIANCE_KEYWORDS.get(_OLD_EDGE.sub("", text.strip()).upper())


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(*, quick: bool) -> dict[str, object]:
    lexicon = load_lexicon()
    figures: dict[str, object] = {}
    for size in (8_000, 64_000):
        text = "a" + "!" * size + "a"
        if not quick or size == 8_000:
            figures[f"keyword_old_{size // 1000}k_s"] = seconds(lambda t=text: old_keyword(t))
        figures[f"keyword_new_{size // 1000}k_s"] = seconds(lambda t=text: compliance_keyword(t))
    megabyte = 1_000_000 if not quick else 200_000
    for name, unit in (("punctuation", ".,!?"), ("newlines", "\n"), ("quotes", "> "), ("ellipsis", "…")):
        body = "I have pus\n" + unit * (megabyte // len(unit))
        figures[f"{name}_new_words_s"] = seconds(lambda b=body: new_text(b))
        read = new_text(body)[:30_000]  # what triage reads (service/replies/pipeline.py TRIAGE_LIMIT)
        figures[f"{name}_triage_s"] = seconds(lambda r=read: triage(r, day=1, lexicon=lexicon))
        figures[f"{name}_keyword_s"] = seconds(lambda b=body: compliance_keyword(b))
    return record("text", size=megabyte, **figures)
