"""python -m benchmarks.engines [--users N] [--days N] [--reps N] [--report PATH | --no-report]

The same steps on DuckDB and on Spark (local[2]), side by side in one run, on the same events:
the fact for every day, then FirstLast, activation and transitions day by day with their checks,
and a re-run of the last day. Writes docs/benchmarks/engines.md. Needs the `spark` extra (`make spark`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from pathlib import Path

from activation_assets.checks import invariants as inv
from activation_assets.pipeline import steps
from activation_assets.config import Grain, parse_config
from activation_assets.periods import existing_periods
from activation_assets.sample_data import SampleSpec, write_benchmark_events
from activation_assets.engines import open_warehouse

from .harness import ROOT, commit, machine

START = dt.date(2025, 1, 1)


def _config(workdir: Path, events: Path, days: int, engine: str):
    warehouse = ({"duckdb": {"database": str(workdir / "engines.duckdb")}} if engine == "duckdb" else
                 {"spark": {"master": "local[2]", "warehouse_dir": str(workdir / "spark-warehouse"),
                            "database": "bench", "conf": {"spark.sql.shuffle.partitions": "4",
                                                         "spark.driver.memory": "4g"}}})
    return parse_config({"warehouse": warehouse, "behaviors": [{
        "name": "visited", "source": {"parquet": str(events)}, "start_date": START.isoformat(),
        "end_date": (START + dt.timedelta(days=days - 1)).isoformat()}]}, workdir / "engines.yaml")


def measure(engine: str, workdir: Path, events: Path, days: int, reps: int) -> dict[str, float]:
    config = _config(workdir, events, days, engine)
    behavior = config.behaviors[0]
    periods = existing_periods(behavior, Grain.daily)
    out: dict[str, float] = {}
    began = time.perf_counter()
    with open_warehouse(config) as warehouse:
        out["open the warehouse (session start)"] = time.perf_counter() - began
        began = time.perf_counter()
        steps.materialize_fact(warehouse, behavior, periods)
        out[f"fact, {len(periods)} days in one write"] = time.perf_counter() - began
        per_day = []
        for day in periods:
            began = time.perf_counter()
            steps.materialize_firstlast(warehouse, behavior, Grain.daily, [day])
            steps.materialize_activation(warehouse, behavior, Grain.daily, [day])
            steps.materialize_transitions(warehouse, behavior, Grain.daily, [day])
            per_day.append(time.perf_counter() - began)
        out["FirstLast + activation + transitions, mean per day"] = sum(per_day) / len(per_day)
        out["the same, last day"] = per_day[-1]
        last = periods[-1]
        timings = []
        for _ in range(reps):
            began, count = time.perf_counter(), 0
            for group in (inv.FIRSTLAST_CHECKS, inv.ACTIVATION_CHECKS, inv.TRANSITIONS_CHECKS):
                outcomes: dict[str, inv.CheckOutcome] = {}  # one per asset: check names repeat across assets
                inv.evaluate(warehouse, group, behavior, Grain.daily, last, outcomes)
                assert all(o.passed for o in outcomes.values()), [o.summary() for o in outcomes.values()]
                count += len(outcomes)
            timings.append(time.perf_counter() - began)
        out[f"the {count} checks of the last day"] = sorted(timings)[len(timings) // 2]
        timings = []
        for _ in range(reps):
            began = time.perf_counter()
            steps.materialize_firstlast(warehouse, behavior, Grain.daily, [last])
            steps.materialize_activation(warehouse, behavior, Grain.daily, [last])
            timings.append(time.perf_counter() - began)
        out["re-run of the last day (FirstLast + activation)"] = sorted(timings)[len(timings) // 2]
        rows = warehouse.query_one(f"SELECT count(*) FROM visited_activation_daily WHERE period_start = DATE '{last}'")
        out["activation rows of the last day"] = rows[0]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "engines")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "engines.md")
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    events = args.workdir / "events.parquet"
    count = write_benchmark_events(events, SampleSpec(users=args.users, start=START, days=args.days))
    print(f"{count:,} events, {args.users:,} users, {args.days} days", flush=True)
    results = {engine: measure(engine, args.workdir, events, args.days, args.reps) for engine in ("duckdb", "spark")}
    if results["duckdb"]["activation rows of the last day"] != results["spark"]["activation rows of the last day"]:
        print("ERROR: the engines disagree on the last day's activation rows", file=sys.stderr)
        return 1
    lines = [
        "# DuckDB and Spark side by side",
        "",
        f"`python -m benchmarks.engines --users {args.users} --days {args.days} --reps {args.reps}` at commit"
        f" {commit()}, {dt.date.today()}, on {machine()}: {count:,} events. The same steps (no Dagster) on",
        "DuckDB and on Spark in local mode (`local[2]`, 4 GB driver), one after the other in one run;",
        f"checks and the re-run are medians of {args.reps}. Seconds unless stated.",
        "",
        "| measure | DuckDB | Spark | Spark / DuckDB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for measure_name, duck in results["duckdb"].items():
        spark = results["spark"][measure_name]
        if measure_name.startswith("activation rows"):
            lines.append(f"| {measure_name} | {duck:,} | {spark:,} | |")
        else:
            lines.append(f"| {measure_name} | {duck:.2f} | {spark:.2f} | {spark / duck:.0f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_report:
        args.report.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
