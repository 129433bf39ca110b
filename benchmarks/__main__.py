"""python -m benchmarks [--users N] [--days N] [--reps N] [--workdir DIR] [--report PATH | --no-report]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .harness import ROOT, backfill_child, run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_backfill"]:  # the child process of the backfill measurement
        backfill_child(argv[1], argv[2], daily_only=argv[3:] == ["daily"])
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "harness.md")
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args(argv)
    results = run(args.users, args.days, args.reps, args.workdir, None if args.no_report else args.report)
    problems = []
    if results.facts.get("failed_checks"):
        problems.append(f"{results.facts['failed_checks']} check(s) failed during the backfill")
    problems += [f"the naive recompute differs at {k}" for k, v in results.facts.items()
                 if k.startswith("naive_differs") and v]
    problems += [f"the one-pass reference differs ({k})" for k, v in results.facts.items()
                 if k.startswith("one_pass_differs") and v]
    if results.facts.get("classic_matches") is False:
        problems.append("classic growth accounting disagrees with the activation table")
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
