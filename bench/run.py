"""Every benchmark, one JSON object per line: ``{"name": ..., ...figures...}``.

    .venv/bin/python bench/run.py            # full sizes, for docs/benchmarks.md (about 15 minutes)
    .venv/bin/python bench/run.py --quick    # the same with smaller sizes, in under three minutes
    .venv/bin/python bench/run.py --only dispatch,scale

PostgreSQL at BENCH_DATABASE_URL or TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test,
a database is created and dropped per benchmark) and ``redis-server`` on the PATH (a private one is started
per benchmark). Benchmarks measure; they never assert on time (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import POSTGRES, postgres_available, record  # noqa: E402

BENCHMARKS = ("dispatch", "scale", "inbound", "booking", "triage", "faults", "text")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under three minutes")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHMARKS))
    args = parser.parse_args(argv)
    chosen = [name for name in args.only.split(",") if name] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if not postgres_available():
        parser.error(f"PostgreSQL does not answer at {POSTGRES}; set BENCH_DATABASE_URL to one that does")
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not on the PATH; install Redis (apt install redis-server)")
    failed = 0
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        try:
            module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            record(name, error=f"{type(exc).__name__}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
