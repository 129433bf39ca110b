"""A day's checks against its steps: the daily grain's last day, its steps and its checks in turns.

    python -m benchmarks.daysplit [--users 2000000] [--days 180] [--rounds 5] [--report docs/benchmarks/daysplit.md]

The benchmark's events over `days` days; days 1..N-1 are built once through the step functions (no
Dagster: this measures the SQL), then day N is built again and checked, `rounds` times in turns:
the fact's step, the other steps (FirstLast, activation, the summaries, the rolling engagement), and
every check of every daily table, each asset's checks as its step evaluates them. The target: the
checks cost at most the steps (#27).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import duckdb
import yaml

from activation_assets.checks import invariants as inv
from activation_assets.config import Grain, load_config
from activation_assets.engines.duckdb import DuckDBWarehouse
from activation_assets.pipeline import steps
from activation_assets.sample_data import SampleSpec, write_benchmark_events

from .harness import MEMORY_LIMIT, ROOT, START, Results, commit, machine

BEHAVIOR = "split"
LADDER = (steps.materialize_firstlast, steps.materialize_activation, steps.materialize_summaries,
          steps.materialize_rolling_engagement)


def build(workdir: Path, users: int, days: int):
    """The warehouse with days 1..N-1 of the daily grain (reused when already there)."""
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / f"events_{users}x{days}.parquet"
    if not events.exists():
        write_benchmark_events(events, SampleSpec(users=users, days=days, start=START, seed=7))
    config = workdir / f"daysplit_{users}x{days}.yaml"
    config.write_text(yaml.safe_dump({
        "database": str(workdir / f"daysplit_{users}x{days}.duckdb"), "memory_limit": MEMORY_LIMIT,
        "behaviors": [{"name": BEHAVIOR, "source": {"parquet": str(events)}, "start_date": START.isoformat(),
                       "end_date": (START + dt.timedelta(days=days - 1)).isoformat(), "timezone": "UTC",
                       "grains": ["daily"]}]}, sort_keys=False))
    behavior = load_config(config).behaviors[0]
    conn = duckdb.connect(str(workdir / f"daysplit_{users}x{days}.duckdb"))
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    warehouse = DuckDBWarehouse(conn)
    warehouse.ensure_partition_log()
    all_days = [START + dt.timedelta(days=i) for i in range(days)]
    if not warehouse.table_exists(f"{BEHAVIOR}_engagement_daily"):
        began = time.perf_counter()
        steps.materialize_fact(warehouse, behavior, all_days)
        warehouse.end_step()
        for step in LADDER:
            step(warehouse, behavior, Grain.daily, all_days[:-1])
            warehouse.end_step()
        print(f"days 1-{days - 1} built in {time.perf_counter() - began:.0f} s", flush=True)
    return warehouse, behavior, all_days[-1]


def run(users: int, days: int, rounds: int, workdir: Path, report: Path | None) -> Results:
    results = Results(width=60)
    print(f"a day's steps and checks: {users:,} users x {days} days on {machine()}", flush=True)
    warehouse, behavior, day = build(workdir, users, days)
    by_table = inv.checks_by_table(behavior, Grain.daily)
    times: dict[str, list[float]] = {"fact": [], "steps": [], **{table: [] for table in by_table}}

    def timed(name: str, fn) -> None:
        began = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - began)

    def other_steps() -> None:
        for step in LADDER:
            step(warehouse, behavior, Grain.daily, [day])
            warehouse.end_step()

    for _ in range(rounds):  # in turns: the machine's drift falls on both sides alike
        timed("fact", lambda: (steps.materialize_fact(warehouse, behavior, [day]), warehouse.end_step()))
        timed("steps", other_steps)
        for table, checks in by_table.items():
            outcomes: dict[str, inv.CheckOutcome] = {}
            timed(table, lambda: inv.evaluate_range(warehouse, checks, behavior, Grain.daily, [day], outcomes))
            assert all(o.passed for o in outcomes.values()), (table, outcomes)
    median = {name: statistics.median(values) for name, values in times.items()}
    all_steps = median["fact"] + median["steps"]
    checks = sum(median[table] for table in by_table)
    results.add(f"day {days}: the fact's step", f"{median['fact']:.3f} s")
    results.add(f"day {days}: the other steps (FirstLast, activation, summaries, engagement)", f"{median['steps']:.3f} s")
    for table in by_table:
        results.add(f"day {days}: checks of {table}", f"{median[table]:.3f} s",
                    ", ".join(c.name for c in inv.checks_for(by_table[table], Grain.daily)))
    results.add(f"day {days}: every check", f"{checks:.3f} s",
                f"{checks / all_steps:.2f}x the steps ({all_steps:.3f} s; target <= 1.0x),"
                f" {checks / median['steps']:.2f}x the steps without the fact's")
    warehouse.conn.close()
    if report:
        report.write_text("\n".join([
            "# A day's checks against its steps", "",
            f"Written by `python -m benchmarks.daysplit --users {users} --days {days} --rounds {rounds}` on"
            f" {dt.date.today()}, commit `{commit()}`.", "",
            f"Machine: {machine()}. The benchmark's events (`write_benchmark_events`, seed 7), one Parquet file, UTC"
            " days; days 1 to N-1 built once through the step functions (no Dagster), then day N's steps and"
            f" checks in turns, {rounds} rounds, medians.", "",
            "| measure | value | note |", "| --- | ---: | --- |",
            *[f"| {m} | {v} | {n} |" for m, v, n in results.rows], ""]))
        print(f"report written to {report}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daysplit", description=__doc__)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "daysplit")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "daysplit.md")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    run(args.users, args.days, args.rounds, args.workdir, None if args.no_report else args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
