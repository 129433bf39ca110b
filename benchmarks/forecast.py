"""What the growth model costs: one more day of the daily grain with and without its three forecast
assets, side by side on the benchmark's events (2M users x 180 days by default).

    python -m benchmarks.forecast [--users 2000000] [--days 180] [--reps 5] [--workdir DIR]
                                  [--report docs/benchmarks/forecast.md]

The daily grain is backfilled through Dagster once (reused when the workdir's database already
has it), then the growth model's days are written in one step (timed), and the last day is timed in
turns: the day as `activation materialize` writes it less Dagster (its fact, every daily asset,
their checks), and the growth model's day (its rates, projections and accuracy, and their checks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import duckdb
import yaml

from activation_assets.checks import invariants as inv
from activation_assets.config import Grain, load_config
from activation_assets.engines import as_warehouse
from activation_assets.models import sql
from activation_assets.periods import existing_periods
from activation_assets.pipeline import steps
from activation_assets.sample_data import SampleSpec, write_benchmark_events

from .harness import MEMORY_LIMIT, ROOT, START, Results, commit, interleaved_medians, machine
from .segments import PLAIN, backfill, day_of_the_grain

GROWTH_MODEL = {"window_days": 28, "horizon_days": 90,
                "scenarios": {"better_onboarding": {"nurr": 0.05}, "paid_campaign": {"new_users": 1.2}}}


def write_config(directory: Path, events: Path, days: int, database: Path) -> Path:
    path = directory / "forecast_plain.yaml"
    end = START + dt.timedelta(days=days - 1)
    path.write_text(yaml.safe_dump({
        "database": str(database), "memory_limit": MEMORY_LIMIT,
        "behaviors": [{"name": PLAIN, "source": {"parquet": str(events)}, "start_date": START.isoformat(),
                       "end_date": end.isoformat(), "timezone": "UTC", "grains": ["daily"],
                       "growth_model": GROWTH_MODEL}],
    }, sort_keys=False))
    return path


def forecast_day(conn, behavior, days: list[dt.date]) -> int:
    """The growth model's days as its asset writes them, less Dagster, then their checks."""
    steps.materialize_forecasts(conn, behavior, days)
    checked = 0
    for table, checks in inv.forecast_checks(behavior).items():
        outcomes: dict = {}
        inv.evaluate_range(conn, checks, behavior, Grain.daily, days, outcomes)
        assert all(o.passed for o in outcomes.values()), [o.summary() for o in outcomes.values()]
        checked += len(outcomes)
    return checked


def run(users: int, days: int, reps: int, workdir: Path, report: Path | None) -> Results:
    results = Results(width=72)
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / f"segment_events_{users}x{days}.parquet"
    database = workdir / f"forecast_{users}x{days}.duckdb"
    print(f"forecast: {users:,} users x {days} days on {machine()}", flush=True)
    if not events.exists():
        write_benchmark_events(events, SampleSpec(users=users, days=days, start=START, seed=7), attributes=True)
    config_path = write_config(workdir, events, days, database)
    config = load_config(config_path)
    behavior = config.behavior(PLAIN)
    last = existing_periods(behavior, Grain.daily)[-1]
    with duckdb.connect(str(database)) as conn:
        built = conn.execute(
            f"SELECT count(*) FROM {sql.PARTITION_LOG} WHERE table_name = ?",
            [sql.engagement_table(PLAIN)]).fetchone()[0] if conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [sql.PARTITION_LOG]).fetchone()[0] else 0
    if built < days:
        print("daily backfill through Dagster (the forecasts included):", flush=True)
        result = backfill(config_path, workdir)
        assert not result["failed_checks"], result
        results.add(f"daily backfill: {days} days, every daily asset, the forecasts and every check",
                    f"{result['wall']:.1f} s", f"peak RSS {result['peak_rss_gb']:.2f} GB")
    with duckdb.connect(str(database), config={"memory_limit": MEMORY_LIMIT}) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        as_warehouse(conn).ensure_partition_log()  # a database from before the growth model: its records' new columns
        forecast_days = [d for d in existing_periods(behavior, Grain.daily) if d >= behavior.forecast_start]
        began = time.perf_counter()
        checked = forecast_day(conn, behavior, forecast_days)
        whole = time.perf_counter() - began
        results.add(f"the growth model's {len(forecast_days)} days in one step, with their {checked} checks",
                    f"{whole:.2f} s", f"{whole / len(forecast_days) * 1000:.0f} ms a day")
        active, ever = conn.execute(
            f"SELECT dau, users_ever FROM {sql.engagement_table(PLAIN)} WHERE period_start = ?", [last]).fetchone()
        parts: dict[str, float] = {}
        timed = interleaved_medians({
            "day": lambda: day_of_the_grain(conn, behavior, last, parts),
            "forecast": lambda: forecast_day(conn, behavior, [last]),
        }, reps, before=lambda: conn.execute("CHECKPOINT"))
        label = f"day {days} ({active:,} active, {ever:,} ever seen)"
        fact = parts["fact"] / reps
        results.add(f"{label}: its fact, every daily asset and their checks", f"{timed['day']:.3f} s")
        results.add(f"{label}: the same less the fact step", f"{timed['day'] - fact:.3f} s",
                    "the fact step's mean time taken off the day's median")
        ratio, grain_ratio = timed["forecast"] / timed["day"], timed["forecast"] / (timed["day"] - fact)
        results.add(f"{label}: the growth model's three assets and their 3 checks", f"{timed['forecast']:.3f} s",
                    f"+{ratio:.1%} of the day (target <= 5 %); +{grain_ratio:.1%} of its daily assets alone")
    if report:
        report.write_text("\n".join([
            "# What the growth model costs", "",
            f"Written by `python -m benchmarks.forecast --users {users} --days {days} --reps {reps}` on"
            f" {dt.date.today()}, commit `{commit()}`.", "",
            f"Machine: {machine()}. The benchmark's events as one behavior of the daily grain with"
            f" `growth_model: {GROWTH_MODEL}` (the bundled config's: L = 28, H = 90, two scenarios). Day times"
            " are medians of the repetitions, the two measurements in turns, each after a CHECKPOINT; both are"
            " in-process, without Dagster's run around them (a run of the forecast job adds Dagster's own"
            " bookkeeping of three asset partitions, see [Against the same layer in"
            " dbt](../performance.md#against-the-same-layer-in-dbt)).", "",
            "| measure | value | note |", "| --- | ---: | --- |",
            *[f"| {m} | {v} | {n} |" for m, v, n in results.rows], ""]))
        print(f"report written to {report}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forecast", description=__doc__)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "forecast.md")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    run(args.users, args.days, args.reps, args.workdir, None if args.no_report else args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
