"""This project against the same layer written by hand in dbt (`benchmarks/dbt_layer/`): a dbt-duckdb
project of the four core models (a fact of active user-days, FirstLast chained day to day by
microbatch, the activation as a view, the transitions) with nine data tests on the latest day.

    python -m benchmarks.dbt_layer [--users 500000] [--days 112] [--reps 3] [--report docs/benchmarks/dbt.md]

Timed as a user meets them, each a whole process, the two in turns:

- the backfill of days 1..N: `dbt run` of every batch, against `activation materialize` of the whole
  daily grain (every daily asset and check) on an empty database;
- one more day, N + 1: `dbt build` of its batch (models and tests), against `activation materialize`
  after `end_date` moved one day (its fact day and every daily asset with its checks).

Both read the same Parquet file (UTC days). The rows are compared: dbt's FirstLast, activation and
transitions equal this project's (without its engagement columns). `activation materialize` runs in a
child that times its own parts: start-up (interpreter, imports, the config), planning (reading the
sources, what to run), the SQL of the steps (with the checkpoint of each step's writes into the
database file), the checks, and what is left of the runs (Dagster's bookkeeping: building the
definitions, runs and events).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

from activation_assets.sample_data import SampleSpec, write_benchmark_events

from .harness import Results, ROOT, START, commit, machine

DBT_PROJECT = Path(__file__).resolve().parent / "dbt_layer"
BIN = Path(sys.executable).parent
BEHAVIOR = "layer"

# What times `activation materialize`'s parts, in the process that runs it: every step function and the
# check evaluation are wrapped (the factory calls them through their modules), and the planning
# functions. Times are from BENCH_BEGAN (set just before the process was spawned); the parts are
# written to BENCH_PARTS when the command's process exits.
TIMING = """
import atexit, json, os, sys, time
from activation_assets.cli.process import pause_collection
pause_collection()  # as the `activation` command starts (cli.main.run)
from activation_assets.checks import invariants
from activation_assets.cli import commands
from activation_assets.pipeline import steps
parts = {}

def reset():
    parts.clear()
    parts.update({"steps": 0.0, "checks": 0.0, "planning": 0.0, "runs": 0.0, "asset_partitions": 0})

def began():
    return float(os.environ["BENCH_BEGAN"])

def timed(module, name, part):
    fn = getattr(module, name)
    def wrapper(*args, **kwargs):
        start = time.time()
        if part == "steps":
            parts.setdefault("first_step", start - began())
        if part == "runs":
            parts.setdefault("runs_began", start - began())
        try:
            return fn(*args, **kwargs)
        finally:
            parts[part] += time.time() - start
    setattr(module, name, wrapper)

for name in [n for n in dir(steps) if n.startswith("materialize_")]:
    timed(steps, name, "steps")
timed(invariants, "evaluate_range", "checks")
# What a step wrote is checkpointed into the database file when its step ends (the resource's exit):
# DuckDB's work on the step's rows, not Dagster's.
from activation_assets.engines.duckdb import DuckDBWarehouse
timed(DuckDBWarehouse, "end_step", "steps")
for name in ("preflight", "reconcile", "find_outdated", "plan"):
    timed(commands, name, "planning")
from activation_assets.cli import runner
timed(runner, "execute", "runs")
planned = runner._execute
def counted(runs, *args, **kwargs):
    parts["asset_partitions"] += sum(len(r.periods) * len(r.keys) for r in runs)
    return planned(runs, *args, **kwargs)
runner._execute = counted

def write_parts():
    if "BENCH_PARTS" not in os.environ:
        return  # the server's own exit
    import resource
    parts["total"] = time.time() - began()
    parts["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    with open(os.environ["BENCH_PARTS"], "w") as out:
        json.dump(parts, out)
reset()
"""

# `activation materialize` in a process of its own, as the `activation` command runs it.
CHILD = TIMING + """
from activation_assets.cli.main import main
from activation_assets.cli.process import leave
code = main(["materialize", "--config", sys.argv[1]])
write_parts()
leave(code)  # as the `activation` command exits
"""

# `activation serve` with the same timing in every fork (each command's parts start from zero, and are
# written at its exit: the fork runs the exit functions).
SERVER = TIMING + """
os.register_at_fork(after_in_child=reset)
atexit.register(write_parts)
from activation_assets.cli.main import main
sys.exit(main(["serve", "--socket", sys.argv[1]]))
"""


# Dagster's cost per asset partition by itself: no-op assets of the same partitions, each partition's
# event with three numbers of metadata, in one range run on a fresh instance of the same kind (the
# project's dagster.yaml) with the same bookkeeping switches `activation materialize` sets.
NO_OP = """
import json, os, sys, time
from activation_assets.cli.runner import LIGHTER_BOOKKEEPING
os.environ.update(LIGHTER_BOOKKEEPING)
import dagster as dg
assets_n, first, last = int(sys.argv[1]), sys.argv[2], sys.argv[3]
partitions = dg.DailyPartitionsDefinition(start_date=first, end_date=None, end_offset=1)
def no_op(name):
    @dg.asset(name=name, partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run())
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        for key in context.partition_keys:
            context.add_asset_metadata({"rows": 1, "active": 2, "new": 3}, partition_key=key)
        return dg.MaterializeResult()
    return _asset
assets = [no_op(f"no_op_{i}") for i in range(assets_n)]
began = time.perf_counter()
result = dg.materialize(assets, instance=dg.DagsterInstance.get(),
                        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
                        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
assert result.success
print(json.dumps({"seconds": time.perf_counter() - began}))
"""


def timed_process(args: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """Run a command to its end: (wall seconds, its peak RSS in GB, from its own rusage)."""
    began = time.perf_counter()
    process = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(map(str, args[:3]))} failed ({process.returncode}):\n{output.decode()[-4000:]}")
    return wall, usage.ru_maxrss / 1024 / 1024


class Layers:
    """The two layers over one events file, each with its own database (and Dagster home)."""

    def __init__(self, workdir: Path, events: Path):
        self.workdir, self.events = workdir, events
        self.config = workdir / "layer.yaml"
        self.database = workdir / "layer.duckdb"
        self.home = workdir / "dagster_home"
        self.dbt_database = workdir / "dbt.duckdb"
        self.socket = workdir / "serve.sock"
        self.dbt_env = {"DBT_LAYER_DUCKDB": str(self.dbt_database), "DBT_LAYER_EVENTS": str(events)}

    def write_config(self, last_day: dt.date) -> None:
        self.config.write_text(yaml.safe_dump({
            "database": str(self.database), "memory_limit": "2GB",
            "behaviors": [{"name": BEHAVIOR, "source": {"parquet": str(self.events)}, "start_date": START.isoformat(),
                           "end_date": last_day.isoformat(), "timezone": "UTC", "grains": ["daily"]}],
        }, sort_keys=False))

    def fresh(self) -> None:
        for path in self.workdir.glob("dbt.duckdb*"):
            path.unlink()
        self.fresh_ours()

    def ours(self, served: bool = False) -> tuple[float, float, dict]:
        """`activation materialize` of the config, in a child that times its parts; `served`: the
        `activation` command, handed to the server (`serve`)."""
        report = self.workdir / "parts.json"
        report.unlink(missing_ok=True)
        command = ([sys.executable, "-m", "activation_assets.cli", "materialize", "--config", str(self.config)]
                   if served else [sys.executable, "-c", CHILD, str(self.config)])
        env = {"DAGSTER_HOME": str(self.home), "BENCH_PARTS": str(report), "ACTIVATION_SERVE_SOCKET": str(self.socket)}
        wall, rss = timed_process(command, env={**env, "BENCH_BEGAN": repr(time.time())}, cwd=self.workdir)
        if not report.exists():
            raise SystemExit("the served `activation materialize` ran in its own process, not in the server's fork")
        return wall, rss, json.loads(report.read_text())

    @contextlib.contextmanager
    def serve(self):
        """`activation serve` (timing every fork) on the workdir's socket, for as long as the block lasts."""
        self.socket.unlink(missing_ok=True)
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(self.socket)], cwd=self.workdir,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            said = []
            while not said or "ready" not in said[-1]:
                said.append(server.stdout.readline())
                if not said[-1]:
                    raise SystemExit(f"activation serve did not start: {''.join(said)[-2000:]}")
            yield
        finally:
            server.terminate()
            server.wait()

    def fresh_ours(self) -> None:
        """This project's database and Dagster home only (`fresh`: dbt's too)."""
        for path in self.workdir.glob("layer.duckdb*"):
            path.unlink()
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir()
        shutil.copy(ROOT / "activation_assets" / "instance" / "dagster.yaml", self.home / "dagster.yaml")

    def no_op(self, assets: int, first: dt.date, last: dt.date) -> float:
        """Seconds per asset partition of `assets` no-op assets over first..last in one range run."""
        home = self.workdir / "no_op_home"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        shutil.copy(ROOT / "activation_assets" / "instance" / "dagster.yaml", home / "dagster.yaml")
        out = subprocess.run([sys.executable, "-c", NO_OP, str(assets), first.isoformat(), last.isoformat()],
                             env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True, check=True)
        days = (last - first).days + 1
        return json.loads(out.stdout.strip().splitlines()[-1])["seconds"] / (assets * days)

    def dbt(self, command: str, first: dt.date, last: dt.date) -> tuple[float, float]:
        """`dbt <command>` of the batches first..last (the tests look at `last`)."""
        end = last + dt.timedelta(days=1)
        return timed_process(
            [str(BIN / "dbt"), command, "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT),
             "--event-time-start", first.isoformat(), "--event-time-end", end.isoformat(),
             "--vars", json.dumps({"start_date": START.isoformat(), "test_day": last.isoformat()}), "--quiet"],
            env=self.dbt_env, cwd=DBT_PROJECT)

    def rows_differ(self) -> dict[str, int]:
        """Rows of dbt's relations that differ from this project's (both ways; 0: identical)."""
        pairs = {
            "firstlast_daily": (f"{BEHAVIOR}_firstlast_daily", "* EXCLUDE (days_seen_bits)"),
            "activation_daily": (f"{BEHAVIOR}_activation_daily",
                                 "* EXCLUDE (days_seen_bits, engagement_state, prev_engagement_state)"),
            "transitions_daily": (f"{BEHAVIOR}_transitions_daily", "*"),
        }
        out = {}
        with duckdb.connect() as conn:
            conn.execute(f"ATTACH '{self.database}' AS ours (READ_ONLY)")
            conn.execute(f"ATTACH '{self.dbt_database}' AS dbt (READ_ONLY)")
            for theirs, (table, columns) in pairs.items():
                a, b = f"SELECT {columns} FROM ours.{table}", f"SELECT * FROM dbt.{theirs}"
                out[theirs] = conn.execute(f"SELECT (SELECT count(*) FROM ({a} EXCEPT ALL {b}))"
                                           f" + (SELECT count(*) FROM ({b} EXCEPT ALL {a}))").fetchone()[0]
        return out


def run(users: int, days: int, reps: int, day_reps: int, workdir: Path, report: Path | None) -> list[tuple]:
    results = Results(width=72)
    rows, add = results.rows, results.add

    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / f"dbt_events_{users}x{days + 1}.parquet"
    if not events.exists():
        write_benchmark_events(events, SampleSpec(users=users, days=days + 1, start=START, seed=7))
    layers = Layers(workdir, events)
    last, more = START + dt.timedelta(days=days - 1), START + dt.timedelta(days=days)
    print(f"dbt against activation materialize: {users:,} users x {days} + 1 days on {machine()}", flush=True)
    subprocess.run([str(BIN / "dbt"), "parse", "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT),
                    "--vars", json.dumps({"start_date": START.isoformat(), "test_day": last.isoformat()}), "--quiet"], env={**os.environ, **layers.dbt_env}, cwd=DBT_PROJECT, check=True)

    backfill = {"dbt": [], "ours": [], "served": []}
    rss = {"dbt": 0.0, "ours": 0.0}
    parts: list[dict] = []
    served_parts: list[dict] = []
    with layers.serve():
        for _ in range(reps):
            layers.fresh()
            layers.write_config(last)
            wall, peak = layers.dbt("run", START, last)
            backfill["dbt"].append(wall)
            rss["dbt"] = max(rss["dbt"], peak)
            wall, peak, split = layers.ours()
            backfill["ours"].append(wall)
            rss["ours"] = max(rss["ours"], peak)
            parts.append(split)
            layers.fresh_ours()
            wall, _, split = layers.ours(served=True)
            backfill["served"].append(wall)
            served_parts.append(split)
    differ = layers.rows_differ()
    dbt_s, ours_s = statistics.median(backfill["dbt"]), statistics.median(backfill["ours"])
    label = f"backfill of days 1-{days}"
    add(f"{label}: dbt run (4 models)", f"{dbt_s:.1f} s", f"runs {', '.join(f'{t:.1f}' for t in backfill['dbt'])}")
    add(f"{label}: activation materialize (the daily grain, every asset and check)", f"{ours_s:.1f} s",
        f"{ours_s / dbt_s:.2f}x dbt (target <= 1.0x); runs {', '.join(f'{t:.1f}' for t in backfill['ours'])}")
    split_rows(add, label, parts, layers.no_op(assets_of(parts, days), START, last))
    served_rows(add, label, backfill["served"], dbt_s, served_parts)
    add(f"{label}: peak RSS, dbt run", f"{rss['dbt']:.2f} GB")
    add(f"{label}: peak RSS, activation materialize", f"{rss['ours']:.2f} GB",
        f"{rss['ours'] / rss['dbt']:.2f}x dbt (target <= 1.5x)")
    add("rows of dbt's relations that differ from this project's", str(sum(differ.values())),
        ", ".join(f"{k} {v}" for k, v in differ.items()))

    one_day = {"dbt": [], "ours": [], "served": []}
    parts, served_parts = [], []
    with layers.serve():
        def forget_the_day() -> None:
            """Untimed: the day is forgotten (outside the window), so the next run builds it again."""
            layers.write_config(last)
            layers.ours()
            layers.write_config(more)

        for _ in range(day_reps):
            forget_the_day()
            one_day["dbt"].append(layers.dbt("build", more, more)[0])
            wall, _, split = layers.ours()
            one_day["ours"].append(wall)
            parts.append(split)
            forget_the_day()
            wall, _, split = layers.ours(served=True)
            one_day["served"].append(wall)
            served_parts.append(split)
    differ = layers.rows_differ()
    dbt_s, ours_s = statistics.median(one_day["dbt"]), statistics.median(one_day["ours"])
    label = f"one more day ({more}), median of {day_reps}"
    add(f"{label}: dbt build (4 models, 9 tests)", f"{dbt_s:.2f} s")
    add(f"{label}: activation materialize (its fact day, every daily asset and check)", f"{ours_s:.2f} s",
        f"{ours_s / dbt_s:.2f}x dbt (target <= 1.0x)")
    split_rows(add, label, parts, statistics.median(layers.no_op(assets_of(parts, 1), more, more) for _ in range(3)))
    served_rows(add, label, one_day["served"], dbt_s, served_parts)
    add("rows that differ after the day", str(sum(differ.values())), ", ".join(f"{k} {v}" for k, v in differ.items()))

    if report:
        report.write_text("\n".join([
            "# This project against the same layer in dbt", "",
            f"Written by `python -m benchmarks.dbt_layer --users {users} --days {days} --reps {reps}"
            f" --day-reps {day_reps}` on {dt.date.today()}, commit `{commit()}`.", "",
            f"Machine: {machine()}. The benchmark's events (`write_benchmark_events`, seed 7) of {users:,} users"
            f" over {days} + 1 days, one Parquet file, UTC days. dbt: `benchmarks/dbt_layer/` (dbt-duckdb,"
            " microbatch, one batch a day). Each number is a whole process's wall time, the two tools in turns;"
            " medians. The split of `activation materialize` is measured inside its process (means).", "",
            "| measure | value | note |", "| --- | ---: | --- |", *[f"| {m} | {v} | {n} |" for m, v, n in rows], ""]))
        print(f"report written to {report}", flush=True)
    return rows


def assets_of(parts: list[dict], days: int) -> int:
    """The assets `activation materialize` ran, from the asset partitions it planned over `days`."""
    return round(parts[0]["asset_partitions"] / days)


def split_rows(add, label: str, parts: list[dict], no_op: float) -> None:
    """Where `activation materialize`'s time went (means over the repetitions), and its bookkeeping per
    asset partition against no-op assets' (`no_op`, seconds per asset partition)."""
    mean = {k: statistics.mean(p[k] for p in parts) for k in ("total", "first_step", "planning", "steps", "checks",
                                                                 "runs", "runs_began", "asset_partitions")}
    bookkeeping = mean["runs"] - mean["steps"] - mean["checks"]
    per_partition = bookkeeping / mean["asset_partitions"]
    add(f"{label}: of which start-up to the first step (imports, config, planning, definitions, the run's start)",
        f"{mean['first_step']:.2f} s", f"planning {mean['planning']:.2f} s of it (target <= 1 s)")
    add(f"{label}: of which the steps' SQL", f"{mean['steps']:.2f} s", "with the checkpoint of each step's writes")
    add(f"{label}: of which the checks", f"{mean['checks']:.2f} s",
        f"{mean['checks'] / mean['steps']:.2f}x the steps (target <= 1.0x)")
    add(f"{label}: of which Dagster's bookkeeping (the runs less their steps and checks)", f"{bookkeeping:.2f} s",
        f"{per_partition * 1000:.1f} ms per asset partition ({mean['asset_partitions']:.0f}), {per_partition / no_op:.2f}x"
        f" no-op assets' {no_op * 1000:.1f} ms (target <= 1.5x)")
    add(f"{label}: of which the rest (summary, exit)", f"{mean['total'] - mean['runs_began'] - mean['runs']:.2f} s",
        "start-up and bookkeeping overlap: the definitions and the run's start are both")


def served_rows(add, label: str, walls: list[float], dbt_s: float, parts: list[dict]) -> None:
    """The same command handed to a running `activation serve` (Dagster imported once, before)."""
    wall = statistics.median(walls)
    add(f"{label}: the same through `activation serve`", f"{wall:.2f} s",
        f"{wall / dbt_s:.2f}x dbt; runs {', '.join(f'{t:.1f}' for t in walls)}")
    first = statistics.mean(p["first_step"] for p in parts)
    add(f"{label}: of which start-up to the first step, served (the `activation` process's start included)",
        f"{first:.2f} s", f"planning {statistics.mean(p['planning'] for p in parts):.2f} s of it (target <= 1 s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dbt_layer", description=__doc__)
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--days", type=int, default=112)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--day-reps", type=int, default=6)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "dbt_layer")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "dbt.md")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    run(args.users, args.days, args.reps, args.day_reps, args.workdir, None if args.no_report else args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
