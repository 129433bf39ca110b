"""What segments cost: the same events as two behaviors, one without segments and one with two
(platform, 3 values; country, 8 values), side by side in one database and one run.

    python -m benchmarks.segments [--users 2000000] [--days 180] [--reps 5] [--before COMMIT]
                                  [--report docs/benchmarks/segments.md]

Measured: the daily backfill of each (fact and every daily asset with its checks, through Dagster,
in a child process each); one more day of the daily grain with its checks, the two behaviors in
turns; the storage per (user, day) of their daily FirstLast and of the segment tables. With
`--before`, the same day of the behavior without segments is also timed by the code of that commit
(a git worktree, in child processes, in turns with this checkout's): what the segments' code costs a
behavior that has none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

from activation_assets.checks import invariants as inv
from activation_assets.config import BehaviorConfig, Grain, load_config
from activation_assets.models import sql
from activation_assets.periods import existing_periods
from activation_assets.pipeline import steps
from activation_assets.sample_data import SampleSpec, write_benchmark_events

from .harness import Results, MEMORY_LIMIT, ROOT, START, commit, interleaved_medians, machine, table_bytes

PLAIN, SEGMENTED = "plain", "segmented"
SEGMENTS = [{"column": "platform"}, {"column": "country"}]


def write_config(directory: Path, events: Path, days: int, behaviors: list[str]) -> Path:
    path = directory / f"segments_{'_'.join(behaviors)}.yaml"
    end = START + dt.timedelta(days=days - 1)
    path.write_text(yaml.safe_dump({
        "database": str(directory / "segments.duckdb"), "memory_limit": MEMORY_LIMIT,
        "behaviors": [{"name": name, "source": {"parquet": str(events)}, "start_date": START.isoformat(),
                       "end_date": end.isoformat(), "timezone": "UTC", "grains": ["daily"],
                       **({"segments": SEGMENTS} if name == SEGMENTED else {})} for name in behaviors],
    }, sort_keys=False))
    return path


def backfill(config_path: Path, workdir: Path) -> dict:
    """Every daily partition of the config's one behavior through Dagster (`activation materialize`'s
    runner, single-run ranges), in a child process: its wall time and peak RSS."""
    home = Path(tempfile.mkdtemp(prefix="segments_home_", dir=workdir))
    shutil.copy(ROOT / "activation_assets" / "instance" / "dagster.yaml", home / "dagster.yaml")
    began = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "benchmarks.segments", "_backfill", str(config_path)],
                           env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True)
    wall = time.perf_counter() - began
    shutil.rmtree(home, ignore_errors=True)
    if child.returncode:
        raise SystemExit(f"the backfill of {config_path.name} failed:\n{child.stderr[-3000:]}")
    return {"wall": wall, **json.loads(child.stdout.strip().splitlines()[-1])}


def backfill_child(config_path: str) -> None:
    import resource

    import dagster as dg

    from activation_assets.cli import runner
    from activation_assets.pipeline import plan as planning

    config = load_config(config_path)
    runs = planning.plan(config, list(config.behaviors), [Grain.daily], None, None, done=lambda table: set())
    failed = runner.execute(config, runs, dg.DagsterInstance.get())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(json.dumps({"failed_checks": failed, "peak_rss_gb": peak}))


def day_of_the_grain(conn, behavior: BehaviorConfig, day: dt.date, parts: dict[str, float] | None = None) -> int:
    """One more day as `activation materialize` writes it, less Dagster: the fact day, then every
    daily asset, each with its checks. With `parts`, the time of each step and each table's checks
    is added there. Returns the number of checks run."""
    grain, days = Grain.daily, [day]
    parts = {} if parts is None else parts

    def timed(name: str, fn) -> None:
        began = time.perf_counter()
        fn()
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - began

    timed("fact", lambda: steps.materialize_fact(conn, behavior, days))
    for step in (steps.materialize_firstlast, steps.materialize_activation, steps.materialize_summaries,
                 steps.materialize_rolling_engagement) + ((steps.materialize_segments,) if behavior.segments else ()):
        timed(step.__name__.removeprefix("materialize_"), lambda step=step: step(conn, behavior, grain, days))
    checked = 0
    for table, checks in inv.checks_by_table(behavior, grain).items():
        if table in sql.forecast_tables(behavior.name):  # the growth model's: not a step of the grain's day
            continue
        outcomes: dict = {}
        timed(f"checks of {table.removeprefix(behavior.name + '_')}",
              lambda checks=checks, outcomes=outcomes: inv.evaluate(conn, checks, behavior, grain, day, outcomes))
        assert all(o.passed for o in outcomes.values()), [o.summary() for o in outcomes.values() if not o.passed]
        checked += len(outcomes)
    return checked


# One day of the daily grain with its checks, timed inside a child process. Plain text run with
# `python -c`, so that the `--before` worktree's package runs it with that commit's API (which names
# the checked tables by behavior name, where this one takes the behavior).
DAY_CHILD = """
import datetime as dt, json, sys, time
import duckdb
from activation_assets.checks import invariants
from activation_assets.config import Grain, load_config
from activation_assets.pipeline import steps

config_path, name, day = sys.argv[1:]
config = load_config(config_path)
behavior, grain, days = config.behavior(name), Grain.daily, [dt.date.fromisoformat(day)]
with duckdb.connect(config.database, config={"memory_limit": config.memory_limit}) as conn:
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("CHECKPOINT")
    began = time.perf_counter()
    for step in (steps.materialize_firstlast, steps.materialize_activation, steps.materialize_summaries,
                 steps.materialize_rolling_engagement):
        step(conn, behavior, grain, days)
    try:
        by_table = invariants.checks_by_table(behavior, grain)
    except (AttributeError, TypeError):
        by_table = invariants.checks_by_table(behavior.name, grain)
    for checks in by_table.values():
        outcomes = {}
        invariants.evaluate(conn, checks, behavior, grain, days[0], outcomes)
        assert all(o.passed for o in outcomes.values())
    print(json.dumps({"seconds": time.perf_counter() - began}))
"""


def timed_child(root: Path, config_path: Path, day: dt.date) -> float:
    child = subprocess.run([sys.executable, "-c", DAY_CHILD, str(config_path), PLAIN, day.isoformat()],
                           cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
    if child.returncode:
        raise SystemExit(f"the day's child in {root} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])["seconds"]


def run(users: int, days: int, reps: int, workdir: Path, report: Path | None, before: str | None) -> list[tuple]:
    results = Results(width=70)
    rows, add = results.rows, results.add

    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / f"segment_events_{users}x{days}.parquet"
    print(f"segments: {users:,} users x {days} days on {machine()}", flush=True)
    if not events.exists():
        write_benchmark_events(events, SampleSpec(users=users, days=days, start=START, seed=7), attributes=True)
    for stale in workdir.glob("segments.duckdb*"):
        stale.unlink()

    print("daily backfill through Dagster, one behavior at a time:", flush=True)
    walls = {}
    for name in (PLAIN, SEGMENTED):
        result = backfill(write_config(workdir, events, days, [name]), workdir)
        assert not result["failed_checks"], result
        walls[name] = result["wall"]
        add(f"daily backfill, {name}: {days} days, every daily asset and check", f"{result['wall']:.1f} s",
            f"peak RSS {result['peak_rss_gb']:.2f} GB" + (
                f"; {result['wall'] / walls[PLAIN]:.2f}x the behavior without segments" if name == SEGMENTED else ""))

    config = load_config(write_config(workdir, events, days, [PLAIN, SEGMENTED]))
    day = existing_periods(config.behaviors[0], Grain.daily)[-1]
    with duckdb.connect(config.database, config={"memory_limit": MEMORY_LIMIT}) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        active, ever = conn.execute(
            f"SELECT (SELECT count(DISTINCT user_id) FROM {sql.fact_table(PLAIN)} WHERE period_start = ?),"
            f" (SELECT count(*) FROM {sql.firstlast_table(PLAIN, Grain.daily)} WHERE period_start = ?)",
            [day, day]).fetchone()
        checks = {name: day_of_the_grain(conn, config.behavior(name), day) for name in (PLAIN, SEGMENTED)}
        parts: dict[str, dict[str, float]] = {PLAIN: {}, SEGMENTED: {}}
        timed = interleaved_medians(
            {name: lambda name=name: day_of_the_grain(conn, config.behavior(name), day, parts[name])
             for name in (PLAIN, SEGMENTED)}, reps, before=lambda: conn.execute("CHECKPOINT"))
        label = f"day {days} ({active:,} active, {ever:,} ever seen)"
        add(f"{label}: the day, no segments: its fact, every daily asset and their {checks[PLAIN]} checks",
            f"{timed[PLAIN]:.3f} s")
        ratio = timed[SEGMENTED] / timed[PLAIN]
        add(f"{label}: the same with two segments and their tables ({checks[SEGMENTED]} checks)",
            f"{timed[SEGMENTED]:.3f} s", f"{ratio:.2f}x (target <= 1.3x)")
        fact = {name: parts[name]["fact"] / reps for name in (PLAIN, SEGMENTED)}
        grain = {name: timed[name] - fact[name] for name in (PLAIN, SEGMENTED)}
        add(f"{label}: the same less the fact step (the daily assets and their checks), no segments",
            f"{grain[PLAIN]:.3f} s", "the fact step's mean time taken off the day's median")
        add(f"{label}: the same less the fact step, two segments", f"{grain[SEGMENTED]:.3f} s",
            f"{grain[SEGMENTED] / grain[PLAIN]:.2f}x")
        for part in parts[SEGMENTED]:  # where the difference is (means over the repetitions)
            with_, without = parts[SEGMENTED][part] / reps, parts[PLAIN].get(part, 0.0) / reps
            if with_ - without > 0.01:
                add(f"{label}: of which {part}", f"{with_:.3f} s",
                    f"{with_ - without:+.3f} s against the behavior without segments" if without else "")
        for name in (PLAIN, SEGMENTED):
            table = sql.firstlast_table(name, Grain.daily)
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            add(f"storage: {table}", f"{table_bytes(conn, table) / count:.2f} B/row", f"{count:,} (user, day) rows")
        segment_bytes = sum(table_bytes(conn, t) for t in sql.segment_tables(SEGMENTED, Grain.daily))
        add("storage: the three daily segment tables", f"{segment_bytes / 1e6:.1f} MB",
            f"{segment_bytes / count:.3f} B per (user, day)")

    if before:
        worktree = workdir / f"before_{before}"
        if not worktree.exists():
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), before], cwd=ROOT, check=True,
                           capture_output=True)
        plain = write_config(workdir, events, days, [PLAIN])
        times: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(reps):
            times["before"].append(timed_child(worktree, plain, day))
            times["now"].append(timed_child(ROOT, plain, day))
        then, now = statistics.median(times["before"]), statistics.median(times["now"])
        add(f"{label}: the daily grain with its checks, no segments, by the code at {before}", f"{then:.3f} s",
            "the same partition, in turns with the next line (child processes)")
        add(f"{label}: the same by this checkout", f"{now:.3f} s", f"{now / then:.2f}x the code before segments")
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, capture_output=True)

    if report:
        report.write_text("\n".join([
            "# What segments cost", "",
            f"Written by `python -m benchmarks.segments --users {users} --days {days} --reps {reps}"
            f"{f' --before {before}' if before else ''}` on {dt.date.today()}, commit `{commit()}`.", "",
            f"Machine: {machine()}. The same events (the benchmark's activity, with a platform of 3 values and a"
            " country of 8 per event, users keeping theirs and a few changing) as two behaviors of the daily grain:"
            f" `{PLAIN}` without segments and `{SEGMENTED}` with `segments: [{{column: platform}}, {{column:"
            " country}]`. Day times are medians of the repetitions, the two behaviors in turns, each a"
            " CHECKPOINT after the other; a backfill is one run each.", "",
            "| measure | value | note |", "| --- | ---: | --- |",
            *[f"| {m} | {v} | {n} |" for m, v, n in rows], ""]))
        print(f"report written to {report}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_backfill"]:
        backfill_child(argv[1])
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segments", description=__doc__)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--before", help="a commit whose code times the behavior without segments too")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "segments.md")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    run(args.users, args.days, args.reps, args.workdir, None if args.no_report else args.report, args.before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
