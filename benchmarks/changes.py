"""Sources change: what finding a change costs, and a correction far back against a full rebuild.

    python -m benchmarks.changes [--fact-users 2000000] [--users 200000] [--days 365] [--back 100] [--reps 3]

1. *Nothing changed*, on a year of daily Hive-style files at --fact-users: every fact day written
   (with its fingerprint), then `changes.detect` as `activation materialize` and `status` run it
   first, against one fingerprint pass over the whole source (what a table source costs, and what
   finding changes would cost without the record of files). Then one day's file rewritten with
   late rows, `--back` days before the end: `detect` again.
2. *A correction `--back` days before the end*, at --users x --days, every grain: the no-flag
   `activation materialize` that finds and repairs it, end to end, against a full rebuild (a fresh
   `activation materialize` of everything into a new database); the tables must be equal.
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
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from activation_assets.pipeline import changes

from activation_assets import cli

from activation_assets.models import sql

from activation_assets.pipeline import steps
from activation_assets.config import Grain, load_config
from activation_assets.periods import existing_periods
from activation_assets.engines.duckdb import DuckDBWarehouse

from .daycost import BEHAVIOR, START, _config, write_events
from .harness import ROOT, commit, machine


def _late_rows(hive: Path, day: dt.date, rows: int = 1000) -> Path:
    """Append `rows` events of existing users to the day's file (late data for that day)."""
    path = hive / f"date={day.isoformat()}" / "part-0.parquet"
    table = pq.read_table(path)
    late = table.slice(0, rows)
    late = late.set_column(1, "occurred_at", pa.compute.add(late.column("occurred_at"), pa.scalar(
        dt.timedelta(seconds=1), pa.duration("us"))))
    pq.write_table(pa.concat_tables([table, late]), path)
    return path


def _timed(fn, reps: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(reps):
        began = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples), result


def detection(data: Path, days: int, back: int, reps: int) -> list[tuple[str, str, str]]:
    last = START + dt.timedelta(days=days - 1)
    config = load_config(_config(data, str(data / "hive" / "**" / "*.parquet"), last))
    behavior = config.behaviors[0]
    rows = []
    with duckdb.connect(str(data / "day.duckdb")) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        wh = DuckDBWarehouse(conn)
        wh.ensure_partition_log()
        began = time.perf_counter()
        steps.materialize_fact(wh, behavior, existing_periods(behavior, Grain.daily))
        print(f"  every fact day written in {time.perf_counter() - began:.0f} s", flush=True)
        began = time.perf_counter()
        first = changes.detect(wh, behavior)
        print(f"  first look (records {len(changes.local_files(behavior))} files) in"
              f" {time.perf_counter() - began:.2f} s", flush=True)
        assert not first.days
        nothing, found = _timed(lambda: changes.detect(wh, behavior), reps)
        assert not found.days and found.days_read == 0
        recorded = wh.recorded_fingerprints(sql.fact_table(behavior.name))
        every_day = sorted(recorded)
        whole, differing = _timed(lambda: list(changes._fingerprint_and_compare(
            wh, behavior, every_day, recorded, "TIMESTAMP")), reps)
        assert not differing
        rows.append((f"nothing changed, {len(every_day)} daily files: `detect`", f"{nothing:.3f} s",
                     f"{whole / nothing:.0f}x faster than fingerprinting every day; reads no file"))
        rows.append(("fingerprinting every fact day in one pass (a table source; no file record)",
                     f"{whole:.2f} s", ""))
        day = last - dt.timedelta(days=back - 1)
        _late_rows(data / "hive", day)
        began = time.perf_counter()
        found = changes.detect(wh, behavior, record=False)
        one_file = time.perf_counter() - began
        assert found.outdated == [day], found.outdated
        rows.append((f"one day's file rewritten with late rows, {back} days back: `detect`", f"{one_file:.3f} s",
                     f"{found.days_read} fact days read again; finds {day}"))
    return rows


def _quiet(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(args) == 0, args
    return out.getvalue()


def _differing_rows(left: Path, right: Path) -> int:
    with duckdb.connect(str(left)) as conn:
        conn.execute(f"ATTACH '{right}' AS other (READ_ONLY)")
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()"
            " AND table_name NOT LIKE '\\_%' ESCAPE '\\'").fetchall()]
        return sum(conn.execute(
            f'SELECT (SELECT count(*) FROM (SELECT * FROM "{t}" EXCEPT ALL SELECT * FROM other."{t}"))'
            f' + (SELECT count(*) FROM (SELECT * FROM other."{t}" EXCEPT ALL SELECT * FROM "{t}"))').fetchone()[0]
            for t in tables)


def correction(data: Path, days: int, back: int) -> list[tuple[str, str, str]]:
    last = START + dt.timedelta(days=days - 1)
    source = str(data / "hive" / "**" / "*.parquet")
    work, fresh = data / "work", data / "fresh"
    for directory in (work, fresh):
        directory.mkdir()
        (directory / "dagster_home").mkdir()
        shutil.copy(ROOT / "activation_assets" / "instance" / "dagster.yaml", directory / "dagster_home")
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    config = _config(work, source, last)
    began = time.perf_counter()
    _quiet(["materialize", "--config", str(config)])
    print(f"  history of {days} days built in {time.perf_counter() - began:.0f} s", flush=True)
    day = last - dt.timedelta(days=back - 1)
    _late_rows(data / "hive", day)
    began = time.perf_counter()
    out = _quiet(["materialize", "--config", str(config)])
    repair = time.perf_counter() - began
    assert f"{day}: source rows" in out, out
    print(f"  correction {back} days back repaired in {repair:.1f} s", flush=True)
    os.environ["DAGSTER_HOME"] = str(fresh / "dagster_home")
    fresh_config = _config(fresh, source, last)
    began = time.perf_counter()
    _quiet(["materialize", "--config", str(fresh_config)])
    rebuild = time.perf_counter() - began
    print(f"  full rebuild in {rebuild:.1f} s", flush=True)
    differing = _differing_rows(work / "day.duckdb", fresh / "day.duckdb")
    assert differing == 0, f"{differing} rows differ from a fresh run"
    return [
        (f"a correction {back} days back: `activation materialize` (finds it, rebuilds what follows)",
         f"{repair:.1f} s", f"{repair / rebuild:.2f}x the full rebuild; tables equal a fresh run (0 rows differ)"),
        (f"full rebuild of {days} days, every grain: `activation materialize` into a new database",
         f"{rebuild:.1f} s", ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.changes", description=__doc__)
    parser.add_argument("--fact-users", type=int, default=2_000_000, help="users of the detection measurement")
    parser.add_argument("--users", type=int, default=200_000, help="users of the correction measurement")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--back", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "changes.md")
    args = parser.parse_args(argv)
    print(f"changes: detection at {args.fact_users:,} users, correction at {args.users:,} users, {args.days} days;"
          f" on {machine()}", flush=True)
    rows: list[tuple[str, str, str]] = []
    for users, measure in ((args.fact_users, "detection"), (args.users, "correction")):
        data = args.workdir / f"changes_{measure}_{users}x{args.days}"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        events = write_events(data, users, args.days)
        (data / "events.parquet").unlink()  # only the daily files are used here
        print(f"  {measure}: wrote {events:,} events", flush=True)
        rows += detection(data, args.days, args.back, args.reps) if measure == "detection" else \
            correction(data, args.days, args.back)
        shutil.rmtree(data, ignore_errors=True)
    lines = [
        "# Sources change: finding changes, and a correction far back",
        "",
        f"Written by `python -m benchmarks.changes --fact-users {args.fact_users} --users {args.users}"
        f" --days {args.days} --back {args.back} --reps {args.reps}` on {dt.date.today()}, commit `{commit()}`.",
        "",
        f"Machine: {machine()}. Daily Hive-style Parquet files (`date=YYYY-MM-DD/part-0.parquet`), users"
        " joining in the first two weeks, DAU about 10% of the users (the data of `benchmarks.daycost`)."
        f" Detection times are medians of {args.reps}; the correction and the rebuild are single runs,"
        " end to end in-process (Dagster included), every grain.",
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
