"""A day costs a day: one more day, end to end, as `activation materialize` runs it, after a short
and a long history; and the fact step for one day against a plain CREATE TABLE AS of its rows.

    python -m benchmarks.daycost [--users 500000] [--fact-users 2000000] [--reps 3] [--report docs/benchmarks/daycost.md]

Users ever seen saturate in the first two weeks, so that only the history grows. The source is laid
out two ways: daily Hive-style directories (`events/date=YYYY-MM-DD/part-0.parquet`) and one
time-ordered file. Every number is measured side by side in one run and written to the report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from activation_assets import cli

from activation_assets.models import sql

from activation_assets.pipeline import steps
from activation_assets.config import load_config
from activation_assets.engines.duckdb import DuckDBWarehouse, source_relation

from .harness import ROOT, commit, machine

START = dt.date(2025, 1, 1)  # a Wednesday
# The measured days: about 90, 180 and 365 days of history, each a day that completes no week
# (Monday weeks) and no month, so that every measurement does the same work: the day's fact, its
# daily models and their checks.
MEASURED = (91, 182, 364)
BEHAVIOR = "day"


def write_events(out: Path, users: int, days: int, seed: int = 11) -> int:
    """Both layouts of one activity: users join in the first two weeks, then each is active on a
    day with a personal propensity (DAU about 10% of the users), one to a few events a day."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 14, size=users)
    propensity = np.clip(rng.lognormal(mean=-2.6, sigma=0.8, size=users), 0.005, 0.9)
    hive = out / "hive"
    if hive.exists():
        shutil.rmtree(hive)
    writer = pq.ParquetWriter(out / "events.parquet", pa.schema(
        [("user_id", pa.int64()), ("occurred_at", pa.timestamp("us"))]))
    total = 0
    for day in range(days):
        active = np.flatnonzero((first <= day) & ((first == day) | (rng.random(users) < propensity)))
        ids = np.repeat(active, 1 + rng.poisson(0.4, size=active.size))
        seconds = np.sort(rng.integers(0, 86400, size=ids.size))
        times = (np.datetime64(START.isoformat()) + np.timedelta64(day, "D")).astype("datetime64[us]") + \
            seconds.astype("timedelta64[s]")
        table = pa.table({"user_id": pa.array(ids, pa.int64()), "occurred_at": pa.array(times, pa.timestamp("us"))})
        writer.write_table(table, row_group_size=122_880)
        directory = hive / f"date={(START + dt.timedelta(days=day)).isoformat()}"
        directory.mkdir(parents=True)
        pq.write_table(table, directory / "part-0.parquet")
        total += table.num_rows
    writer.close()
    return total


def _config(directory: Path, source: str, last_day: dt.date) -> Path:
    path = directory / "activation.yaml"
    path.write_text(yaml.safe_dump({
        "database": "day.duckdb",
        "behaviors": [{"name": BEHAVIOR, "source": {"parquet": source}, "start_date": START.isoformat(),
                       "end_date": last_day.isoformat(), "timezone": "UTC"}],
    }))
    return path


def _quiet(args: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(args) == 0, args


def one_more_day(data: Path, layout: str, source: str, reps: int) -> dict[int, float]:
    """Backfill up to the day before each measured day, then time `activation materialize` of that
    day: the first time as a daily run makes it, then re-runs of the day (`--from D --to D`)."""
    work = Path(tempfile.mkdtemp(prefix=f"daycost_{layout}_", dir=data))
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    (work / "dagster_home").mkdir()
    shutil.copy(ROOT / "activation_assets" / "instance" / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
    times: dict[int, float] = {}
    for k in MEASURED:
        day = START + dt.timedelta(days=k - 1)
        config = _config(work, source, day - dt.timedelta(days=1))
        began = time.perf_counter()
        _quiet(["materialize", "--config", str(config)])
        print(f"  {layout}: history to day {k - 1} built in {time.perf_counter() - began:.0f} s", flush=True)
        config = _config(work, source, day)
        samples = []
        for rep in range(reps):
            extra = [] if rep == 0 else ["--from", day.isoformat(), "--to", day.isoformat()]
            began = time.perf_counter()
            _quiet(["materialize", "--config", str(config), *extra])
            samples.append(time.perf_counter() - began)
        times[k] = statistics.median(samples)
        print(f"  {layout}: day {k} end to end {times[k]:.2f} s ({', '.join(f'{s:.2f}' for s in samples)})", flush=True)
    _quiet(["check", "--config", str(config)])  # every invariant holds over what was built
    shutil.rmtree(work, ignore_errors=True)
    return times


def fact_against_ctas(data: Path, layout: str, source: str, days: int, reps: int) -> tuple[float, float, int]:
    """The fact step for the last day (no Dagster) and a plain CTAS of that day's rows with the same
    time bound, from the same source into the same database."""
    day = START + dt.timedelta(days=days - 1)
    work = Path(tempfile.mkdtemp(prefix=f"fact_{layout}_", dir=data))
    config = load_config(_config(work, source, day))
    behavior = config.behaviors[0]
    files = steps.day_files(behavior, day, day)
    relation = source_relation(behavior.source, files)
    bound = sql.time_bound("occurred_at", "TIMESTAMP", day, day)
    local = sql.local_date_expr(sql.instant_expr("occurred_at", "TIMESTAMP"), "UTC")
    ctas = (f"CREATE OR REPLACE TABLE plain AS SELECT * FROM {relation} WHERE {bound}"
            f" AND {local} = {sql.date_lit(day)}")
    with duckdb.connect(str(work / "day.duckdb")) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        DuckDBWarehouse(conn).ensure_partition_log()
        fact, plain = [], []
        for _ in range(reps):
            began = time.perf_counter()
            steps.materialize_fact(conn, behavior, [day])
            fact.append(time.perf_counter() - began)
            began = time.perf_counter()
            conn.execute(ctas)
            plain.append(time.perf_counter() - began)
        rows = conn.execute(f"SELECT count(*) FROM fact_{BEHAVIOR}").fetchone()[0]
        assert rows == conn.execute("SELECT count(*) FROM (SELECT DISTINCT * FROM plain)").fetchone()[0]
    shutil.rmtree(work, ignore_errors=True)
    return statistics.median(fact), statistics.median(plain), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daycost", description=__doc__)
    parser.add_argument("--users", type=int, default=500_000, help="users of the end-to-end day measurement")
    parser.add_argument("--fact-users", type=int, default=2_000_000, help="users of the fact-vs-CTAS measurement")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "daycost.md")
    args = parser.parse_args(argv)
    print(f"day cost: {args.users:,} users x {args.days} days; fact step at {args.fact_users:,} users;"
          f" on {machine()}", flush=True)
    rows: list[tuple[str, str, str]] = []

    fact_data = args.workdir / f"daycost_{args.fact_users}x{args.days}"
    fact_data.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    events = write_events(fact_data, args.fact_users, args.days)
    print(f"  wrote {events:,} events in {time.perf_counter() - began:.0f} s", flush=True)
    for layout, source in (("daily Hive directories", str(fact_data / "hive" / "**" / "*.parquet")),
                           ("one time-ordered file", str(fact_data / "events.parquet"))):
        fact_s, plain_s, day_rows = fact_against_ctas(fact_data, layout.split()[1], source, args.days, args.reps)
        rows.append((f"fact step, day {args.days} of {events:,} events ({layout}): materialize_fact",
                     f"{fact_s:.3f} s", f"{fact_s / plain_s:.2f}x the plain CTAS (target <= 3x); {day_rows:,} rows"))
        rows.append((f"fact step, day {args.days} ({layout}): plain CREATE TABLE AS with the same bound",
                     f"{plain_s:.3f} s", ""))
        print(f"  {rows[-2]}\n  {rows[-1]}", flush=True)
    shutil.rmtree(fact_data, ignore_errors=True)

    data = args.workdir / f"daycost_{args.users}x{args.days}"
    data.mkdir(parents=True, exist_ok=True)
    events = write_events(data, args.users, args.days)
    for layout, source in (("daily Hive directories", str(data / "hive" / "**" / "*.parquet")),
                           ("one time-ordered file", str(data / "events.parquet"))):
        times = one_more_day(data, layout.split()[1], source, args.reps)
        for k in MEASURED:
            rows.append((f"one more day after {k - 1} days ({layout})", f"{times[k]:.2f} s",
                         f"{times[k] / times[MEASURED[0]]:.2f}x the day after {MEASURED[0] - 1} days"
                         + (" (target <= 1.2x)" if k == MEASURED[-1] else "")))
    shutil.rmtree(data, ignore_errors=True)

    lines = [
        "# A day costs a day",
        "",
        f"Written by `python -m benchmarks.daycost --users {args.users} --fact-users {args.fact_users}"
        f" --days {args.days} --reps {args.reps}` on {dt.date.today()}, commit `{commit()}`.",
        "",
        f"Machine: {machine()}. Users join in the first two weeks, then only the history grows (DAU about"
        f" 10% of the users). *One more day* is `activation materialize` in-process after the config's"
        " `end_date` moved one day (the day's fact, its daily FirstLast, activation, transitions, growth,"
        " cohorts, distributions, engagement transitions, engagement and stickiness with their checks,"
        " Dagster's bookkeeping, planning and summary"
        f" included), median of the first run and {args.reps - 1} re-runs of the day. Each measured day"
        " completes no week and no month.",
        "",
        "| measure | value | note |",
        "| --- | ---: | --- |",
        *[f"| {m} | {v} | {n} |" for m, v, n in rows],
        "",
    ]
    args.report.write_text("\n".join(lines))
    print(f"report written to {args.report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
