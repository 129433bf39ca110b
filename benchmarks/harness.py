"""The benchmark: the incremental layer against the floor, a naive recompute and classic growth
accounting, measured side by side in one run on one synthetic fact.

    python -m benchmarks [--users 2000000] [--days 180] [--reps 3] [--report docs/benchmarks/harness.md]

Every comparison is also a correctness check: the naive recompute must produce exactly the
activation partition the incremental step wrote, and the classic growth accounting the same counts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import duckdb

from activation_assets import tables
from activation_assets.models import sql

from activation_assets.pipeline import steps
from activation_assets.checks.invariants import (
    ACTIVATION_CHECKS, COHORTS_CHECKS, ENGAGEMENT_CHECKS, ENGAGEMENT_TRANSITIONS_CHECKS, FIRSTLAST_CHECKS,
    GROWTH_CHECKS, STICKINESS_CHECKS, TRANSITIONS_CHECKS, evaluate,
)
from activation_assets.config import ActivationConfig, BehaviorConfig, Grain, parse_config
from activation_assets.periods import existing_periods
from activation_assets.sample_data import SampleSpec, write_benchmark_events
from activation_assets.engines.duckdb import DuckDBWarehouse, source_relation

ROOT = Path(__file__).resolve().parent.parent
START = dt.date(2025, 1, 1)
BEHAVIOR = "bench"


@dataclass
class Results:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (measure, value, note)
    facts: dict[str, object] = field(default_factory=dict)
    width: int = 58  # of the measure's column, as the console shows it

    def add(self, measure: str, value: str, note: str = "") -> None:
        self.rows.append((measure, value, note))
        print(f"  {measure:<{self.width}} {value:>12}  {note}", flush=True)


def interleaved_medians(fns: dict[str, object], reps: int, before=None) -> dict[str, float]:
    """The median time of each function, run in turns (a, b, c, a, b, c, ...): a ratio between two
    of them is then not skewed by the machine drifting between one's repetitions and the other's.
    `before` runs untimed ahead of each call (a CHECKPOINT: DuckDB checkpoints a commit whose log
    passes 16 MB, so without it a call may pay for the writes of the one before it)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if before:
                before()
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in times.items()}


def median_time(fn, reps: int) -> float:
    return interleaved_medians({"fn": fn}, reps)["fn"]


MEMORY_LIMIT = "2GB"  # DuckDB spills beyond it; keeps the process under the 3 GB RSS target


def config_for(events: Path, database: Path, days: int) -> ActivationConfig:
    return parse_config({
        "database": str(database),
        "memory_limit": MEMORY_LIMIT,
        "behaviors": [{"name": BEHAVIOR, "source": {"parquet": str(events)}, "start_date": START.isoformat(),
                       "end_date": (START + dt.timedelta(days=days - 1)).isoformat(), "timezone": "UTC"}],
    }, database.parent / "bench.yaml")


# --- the side-by-side queries --------------------------------------------------------------------


def floor_sql(day: dt.date, previous: dt.date) -> list[str]:
    """The least any correct step does: the day's distinct users, the previous state's users, and
    one (narrow) row per user ever seen, written."""
    fact, firstlast = sql.fact_table(BEHAVIOR), sql.firstlast_table(BEHAVIOR, Grain.daily)
    return [
        "CREATE TABLE IF NOT EXISTS floor_rows (period_start DATE, user_id BIGINT)",
        f"DELETE FROM floor_rows WHERE period_start = {sql.date_lit(day)}",
        f"""INSERT INTO floor_rows SELECT {sql.date_lit(day)}, user_id FROM (
                SELECT user_id FROM {firstlast} WHERE period_start = {sql.date_lit(previous)}
                UNION SELECT DISTINCT user_id FROM {fact} WHERE period_start = {sql.date_lit(day)})""",
    ]


def naive_sql(day: dt.date) -> str:
    """The activation partition of `day` from the whole fact history, as a team writes it without
    the layer: distinct active days, islands of consecutive days by window function, aggregates."""
    d = sql.date_lit(day)
    return f"""
        CREATE OR REPLACE TEMP TABLE naive AS
        WITH days AS (
            SELECT DISTINCT user_id, period_start AS day FROM {sql.fact_table(BEHAVIOR)} WHERE period_start <= {d}
        ),
        islands AS (
            SELECT user_id, day,
                   date_diff('day', DATE '2000-01-01', day) - row_number() OVER (PARTITION BY user_id ORDER BY day) AS island
            FROM days
        ),
        current_run AS (
            SELECT user_id, min(day) AS run_start FROM islands GROUP BY user_id, island HAVING max(day) = {d}
        ),
        per_user AS (
            SELECT user_id, min(day) AS first, max(day) AS last, count(*) AS active_periods,
                   bool_or(day = {d} - 1) AS active_1, bool_or(day = {d} - 2) AS active_2,
                   max(day) FILTER (WHERE day < {d}) AS before
            FROM days GROUP BY user_id
        )
        SELECT {d} AS period_start, user_id,
            CASE WHEN first = {d} THEN 'new' WHEN last < {d} THEN 'inactive'
                 WHEN active_1 THEN 'retained' ELSE 'reactivated' END AS state,
            CASE WHEN first = {d} THEN NULL WHEN first = {d} - 1 THEN 'new'
                 WHEN NOT active_1 THEN 'inactive' WHEN active_2 THEN 'retained' ELSE 'reactivated' END AS prev_state,
            first AS first_active_period, last AS last_active_period,
            CAST(CASE WHEN last = {d} THEN date_diff('day', run_start, {d}) + 1 ELSE 0 END AS INTEGER) AS streak,
            CAST(CASE WHEN last = {d} THEN 0 ELSE date_diff('day', last, {d}) END AS INTEGER) AS inactive_streak,
            CAST(CASE WHEN last = {d} AND first < {d} AND NOT active_1
                 THEN date_diff('day', before, {d}) - 1 END AS INTEGER) AS return_gap,
            CAST(active_periods AS INTEGER) AS active_periods
        FROM per_user LEFT JOIN current_run USING (user_id)
    """


def classic_growth_sql(day: dt.date) -> str:
    """Growth accounting for one day as a competent analyst writes it without the layer: the users of
    `day` and of the day before, and the first day of today's users only (a semi-join on the history)."""
    d, fact = sql.date_lit(day), sql.fact_table(BEHAVIOR)
    return f"""
        WITH today AS (SELECT DISTINCT user_id FROM {fact} WHERE period_start = {d}),
        yesterday AS (SELECT DISTINCT user_id FROM {fact} WHERE period_start = {d} - 1),
        seen_before AS (
            SELECT DISTINCT user_id FROM {fact}
            WHERE period_start < {d} AND user_id IN (SELECT user_id FROM today)
        )
        SELECT
            (SELECT count(*) FROM today WHERE user_id NOT IN (SELECT user_id FROM seen_before)) AS new,
            (SELECT count(*) FROM today WHERE user_id IN (SELECT user_id FROM yesterday)) AS retained,
            (SELECT count(*) FROM today WHERE user_id IN (SELECT user_id FROM seen_before)
                                          AND user_id NOT IN (SELECT user_id FROM yesterday)) AS resurrected,
            (SELECT count(*) FROM yesterday WHERE user_id NOT IN (SELECT user_id FROM today)) AS churned
    """


def our_growth(conn, day: dt.date) -> tuple:
    return conn.execute(f"""
        SELECT count(*) FILTER (WHERE state = 'new'), count(*) FILTER (WHERE state = 'retained'),
               count(*) FILTER (WHERE state = 'reactivated'),
               count(*) FILTER (WHERE state = 'inactive' AND prev_state <> 'inactive')
        FROM {sql.activation_table(BEHAVIOR, Grain.daily)} WHERE period_start = {sql.date_lit(day)}""").fetchone()


def naive_differs(conn, day: dt.date) -> int:
    """Rows of the calendar columns (those the naive recompute builds) that differ."""
    table = sql.activation_table(BEHAVIOR, Grain.daily)
    columns = ", ".join(name for name, *_ in conn.execute("DESCRIBE naive").fetchall())
    ours = f"SELECT {columns} FROM {table} WHERE period_start = {sql.date_lit(day)}"
    return conn.execute(
        f"SELECT (SELECT count(*) FROM ({ours} EXCEPT SELECT * FROM naive))"
        f" + (SELECT count(*) FROM (SELECT * FROM naive EXCEPT {ours}))").fetchone()[0]


CALENDAR = "calendar"  # a behavior whose daily tables are the layer's without the rolling engagement


def calendar_history(conn, behavior: BehaviorConfig) -> BehaviorConfig:
    """A behavior `calendar` as the layer was before the rolling engagement: its daily FirstLast
    holds the same rows as the benchmark's, in the same order, without days_seen_bits, its fact is
    the benchmark's (a view), and the log and the definitions record both as the layer's own. The
    step without the bits then runs the layer's own step code (`without_rolling_engagement`), with
    every guard it pays, and rewrites a day of a table as large as the layer's (a checkpoint's cost
    grows with the table, not only with the day)."""
    calendar = behavior.model_copy(update={"name": CALENDAR})
    own = {sql.fact_table(BEHAVIOR): sql.fact_table(CALENDAR)} | {
        table(BEHAVIOR, Grain.daily): table(CALENDAR, Grain.daily)
        for table in (sql.firstlast_table, sql.activation_table)}
    conn.execute(f"CREATE OR REPLACE TABLE {sql.firstlast_table(CALENDAR, Grain.daily)} AS"
                 f" SELECT * EXCLUDE (days_seen_bits) FROM {sql.firstlast_table(BEHAVIOR, Grain.daily)}")
    conn.execute(f"CREATE OR REPLACE VIEW {sql.fact_table(CALENDAR)} AS SELECT * FROM {sql.fact_table(BEHAVIOR)}")
    renamed = "CASE table_name " + " ".join(f"WHEN {sql.literal(a)} THEN {sql.literal(b)}" for a, b in own.items()) + " END"
    conn.execute(f"INSERT OR REPLACE INTO {sql.PARTITION_LOG} BY NAME SELECT * REPLACE ({renamed} AS table_name)"
                 f" FROM {sql.PARTITION_LOG} WHERE table_name IN ({', '.join(map(sql.literal, own))})")
    steps.reconcile_definition(conn, calendar)
    return calendar


@contextmanager
def without_rolling_engagement() -> Iterator[None]:
    """The layer's step code as it was before the rolling engagement: the daily FirstLast without
    days_seen_bits, the activation view without the engagement columns; everything else the same."""
    firstlast_select, activation_view = sql.firstlast_select, sql.activation_view
    with mock.patch.object(steps, "firstlast_columns", lambda grain: tables.FIRSTLAST.columns), \
            mock.patch.object(sql, "firstlast_select",
                              lambda *args, days_seen_bits=False, **kwargs: firstlast_select(*args, **kwargs)), \
            mock.patch.object(sql, "activation_view",
                              lambda *args, **kwargs: activation_view(*args, **kwargs, engagement=False)):
        yield


def daily_step(conn, behavior: BehaviorConfig, day: dt.date) -> None:
    """FirstLast, activation and transitions of one day, as the asset steps write them."""
    steps.materialize_firstlast(conn, behavior, Grain.daily, [day])
    steps.materialize_activation(conn, behavior, Grain.daily, [day])
    steps.materialize_transitions(conn, behavior, Grain.daily, [day])


def one_pass_sql(config: ActivationConfig) -> list[str]:
    """The daily tables a backfill builds — the fact, FirstLast, activation (the same view) and
    transitions — in one pass each, as a team would write them for a one-off: the fact as one
    CREATE TABLE AS; FirstLast as every (user, day) from the user's first day, ASOF-joined with the
    latest active day (whose streak start, prior active day, active-day count and the 63-day bit
    history ending on it come from window functions over the distinct active days; a later day
    shifts those bits by the days since); transitions grouped off the view."""
    behavior = config.behaviors[0]
    days = existing_periods(behavior, Grain.daily)
    first, last = sql.date_lit(days[0]), sql.date_lit(days[-1])
    local = sql.local_date_expr(sql.instant_expr("occurred_at", "TIMESTAMP"), behavior.timezone)
    source = source_relation(behavior.source)
    return [
        f"""CREATE OR REPLACE TABLE ref_fact AS
            SELECT DISTINCT {local} AS period_start, user_id, occurred_at, {local} AS activity_date FROM {source}
            WHERE user_id IS NOT NULL AND {local} BETWEEN {first} AND {last}
            ORDER BY period_start, user_id, occurred_at""",
        f"""CREATE OR REPLACE TABLE ref_firstlast AS
            WITH active AS (SELECT DISTINCT user_id, period_start AS day FROM ref_fact),
            marked AS (
                SELECT user_id, day, lag(day) OVER w AS prev_day, count(*) OVER w AS active_periods,
                       min(day) OVER (PARTITION BY user_id) AS first_day,
                       list(day) OVER (w RANGE BETWEEN INTERVAL {sql.BITS_KEPT - 1} DAY PRECEDING AND CURRENT ROW)
                           AS recent_days
                FROM active WINDOW w AS (PARTITION BY user_id ORDER BY day)
            ),
            runs AS (
                SELECT user_id, day, first_day, active_periods,
                       CAST(list_sum(list_transform(recent_days, lambda x: CAST(1 AS HUGEINT) << date_diff('day', x, day)))
                            AS HUGEINT) AS bits,
                       max(CASE WHEN prev_day = day - 1 THEN NULL ELSE day END)
                           OVER (PARTITION BY user_id ORDER BY day) AS streak_start,
                       max(CASE WHEN prev_day = day - 1 THEN NULL ELSE coalesce(prev_day, DATE '0001-01-01') END)
                           OVER (PARTITION BY user_id ORDER BY day) AS prior_or_none
                FROM marked
            ),
            grid AS (
                SELECT user_id, CAST(d AS DATE) AS period_start
                FROM (SELECT DISTINCT user_id, first_day FROM runs) AS users,
                     generate_series(users.first_day, {last}, INTERVAL 1 DAY) AS g(d)
            )
            SELECT grid.period_start, grid.user_id, runs.first_day AS first_active_period,
                   runs.day AS last_active_period, runs.streak_start AS streak_start_period,
                   nullif(runs.prior_or_none, DATE '0001-01-01') AS prior_active_period,
                   CAST(runs.active_periods AS INTEGER) AS active_periods,
                   CASE WHEN date_diff('day', runs.day, grid.period_start) >= {sql.BITS_KEPT} THEN 0
                        ELSE CAST((runs.bits << date_diff('day', runs.day, grid.period_start))
                                  & {2 ** sql.BITS_KEPT - 1} AS BIGINT) END AS days_seen_bits
            FROM grid ASOF JOIN runs ON grid.user_id = runs.user_id AND grid.period_start >= runs.day
            ORDER BY grid.period_start""",
        f"CREATE OR REPLACE VIEW ref_activation AS {sql.activation_view('ref_firstlast', Grain.daily)}",
        """CREATE OR REPLACE TABLE ref_transitions AS
            SELECT period_start, prev_state AS from_state, state AS to_state, count(*) AS users
            FROM ref_activation GROUP BY ALL ORDER BY period_start""",
    ]


def one_pass_differs(conn, config: ActivationConfig) -> int:
    """Rows that differ between the one-pass reference and the backfill's tables (0: identical)."""
    behavior = config.behaviors[0].name
    pairs = [("ref_fact", sql.fact_table(behavior)),
             ("ref_firstlast", sql.firstlast_table(behavior, Grain.daily)),
             ("ref_transitions", sql.transitions_table(behavior, Grain.daily))]
    total = 0
    for ref, ours in pairs:
        total += conn.execute(
            f"SELECT (SELECT count(*) FROM (SELECT * FROM {ref} EXCEPT ALL SELECT * FROM {ours}))"
            f" + (SELECT count(*) FROM (SELECT * FROM {ours} EXCEPT ALL SELECT * FROM {ref}))").fetchone()[0]
    return total


# --- the backfill, in a child process so its peak memory is its own -------------------------------


# What the daily backfill measured against the one-pass reference builds: the same tables.
DAILY_TABLES = ("firstlast", "activation", "transitions")


def backfill_child(config_path: str, report_path: str, daily_only: bool = False) -> None:
    """Run by the child: every partition of every grain, as single-run backfill runs do (or, with
    `daily_only`, the fact and the daily FirstLast, activation and transitions)."""
    import dagster as dg

    from activation_assets.pipeline import plan as planning

    from activation_assets.cli import runner
    from activation_assets.config import load_config

    config = load_config(config_path)
    instance = dg.DagsterInstance.get()
    runs = planning.plan(config, list(config.behaviors), [Grain.daily] if daily_only else None, None, None,
                    done=lambda table: set())
    if daily_only:
        behavior = config.behaviors[0].name
        keep = {sql.fact_table(behavior), *(f"{behavior}_{model}_daily" for model in DAILY_TABLES)}
        for run in runs:
            run.keys = [k for k in run.keys if k in keep]
    timings = []
    for run in runs:
        began = time.perf_counter()
        failed = runner.execute(config, [run], instance)
        timings.append({"run": run.label, "partitions": len(run.periods), "seconds": time.perf_counter() - began,
                        "failed_checks": failed})
    if daily_only:  # what Dagster itself costs for the same runs
        for run in runs:
            began = time.perf_counter()
            dagster_floor_run(config.behaviors[0], run, instance)
            timings.append({"run": f"{run.label} (no-op)", "partitions": len(run.periods),
                            "seconds": time.perf_counter() - began, "failed_checks": 0, "floor": True})
    Path(report_path).write_text(json.dumps(timings))


def dagster_floor_run(behavior: BehaviorConfig, run, instance) -> None:
    """The run `run` of the backfill again, through the same `dagster.materialize` range run on the
    same instance, with assets that do nothing but return the metadata the real ones returned:
    Dagster's own cost of those partitions (its events, in the instance's event log)."""
    import dagster as dg

    from activation_assets.cli.runner import RANGE_END, RANGE_START
    from activation_assets.orchestration.partitions import partitions_def

    def noop(key: str) -> dg.AssetsDefinition:
        record = instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0]
        metadata = dict(record.asset_materialization.metadata)

        @dg.asset(name=key, partitions_def=partitions_def(behavior, Grain.daily),
                  backfill_policy=dg.BackfillPolicy.single_run())
        def _noop():
            return dg.MaterializeResult(metadata=metadata)

        return _noop

    result = dg.materialize([noop(key) for key in run.keys], instance=instance,
                            tags={RANGE_START: run.periods[0].isoformat(), RANGE_END: run.periods[-1].isoformat()},
                            raise_on_error=True,  # and as quiet on the console as `activation materialize`
                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    assert len(result.get_asset_materialization_events()) == len(run.keys) * len(run.periods)


def run_backfill(config: ActivationConfig, workdir: Path, daily_only: bool = False) -> dict:
    import yaml

    config_path = workdir / "bench.yaml"
    config_path.write_text(yaml.safe_dump({
        "database": config.database,
        "memory_limit": config.memory_limit,
        "behaviors": [json.loads(b.model_dump_json(exclude={"owners", "description"})) for b in config.behaviors],
    }))
    home = Path(tempfile.mkdtemp(prefix="bench_dagster_home_", dir=workdir))
    shutil.copy(ROOT / "activation_assets" / "instance" / "dagster.yaml", home / "dagster.yaml")
    report = workdir / "backfill.json"
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks", "_backfill", str(config_path), str(report),
                    *(["daily"] if daily_only else [])],
                   check=True, env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    shutil.rmtree(home, ignore_errors=True)
    return {"wall": wall, "peak_rss_gb": peak_kb / 1024 / 1024, "runs": json.loads(report.read_text())}


# --- storage -------------------------------------------------------------------------------------


def table_bytes(conn, table: str) -> int:
    """Bytes of the blocks a table's column segments occupy (DuckDB's 256 KiB blocks)."""
    block_size = conn.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0]
    blocks = conn.execute(
        f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0").fetchone()[0]
    return blocks * block_size


# --- the run -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal")))
    return f"{os.cpu_count()} cores ({cpu}), {memory_kb / 1024 / 1024:.0f} GB RAM, {platform.system()}"


def commit() -> str:
    """HEAD, marked `-dirty` when the package or the benchmarks differ from it (then the numbers
    are not those of any commit)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "activation_assets", "benchmarks"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if changed else head


def run(users: int, days: int, reps: int, workdir: Path, report: Path | None) -> Results:
    results = Results()
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / f"events_{users}x{days}.parquet"
    print(f"benchmark: {users:,} users x {days} days on {machine()}", flush=True)
    if not events.exists():
        began = time.perf_counter()
        write_benchmark_events(events, SampleSpec(users=users, days=days, start=START, seed=7))
        print(f"  generated {events.name} in {time.perf_counter() - began:.0f} s", flush=True)
    database = workdir / f"bench_{users}x{days}.duckdb"
    for stale in workdir.glob(f"bench_{users}x{days}.duckdb*"):
        stale.unlink()
    config = config_for(events, database, days)
    behavior = config.behaviors[0]

    print("backfill (through Dagster, every grain, single-run ranges):", flush=True)
    backfill = run_backfill(config, workdir)
    for item in backfill["runs"]:
        results.add(f"backfill run: {item['run']} ({item['partitions']} partitions)", f"{item['seconds']:.1f} s")
    results.add("backfill: all grains, wall time", f"{backfill['wall']:.1f} s", "target <= 240 s at 2M x 180")
    results.add("backfill: peak RSS of the process", f"{backfill['peak_rss_gb']:.2f} GB", "target <= 3 GB")
    results.facts["failed_checks"] = sum(item["failed_checks"] for item in backfill["runs"])

    size = database.stat().st_size  # the layer as the backfill left it (the calendar copy below is not ours)
    conn = duckdb.connect(str(database), config={"memory_limit": MEMORY_LIMIT})
    conn.execute("SET TimeZone = 'UTC'")
    all_days = existing_periods(behavior, Grain.daily)
    fact_rows, fact_users = conn.execute(
        f"SELECT count(*), count(DISTINCT user_id) FROM {sql.fact_table(BEHAVIOR)}").fetchone()
    results.facts.update(events=fact_rows, users=fact_users)
    calendar = calendar_history(conn, behavior)
    marks = sorted({min(k, len(all_days)) for k in (30, 90, days)})
    print(f"side by side at days {marks} (median of {reps}):", flush=True)
    for k in marks:
        day, previous = all_days[k - 1], all_days[k - 2]
        actives, ever = conn.execute(
            f"SELECT (SELECT count(DISTINCT user_id) FROM {sql.fact_table(BEHAVIOR)} WHERE period_start = ?),"
            f" (SELECT count(*) FROM {sql.firstlast_table(BEHAVIOR, Grain.daily)} WHERE period_start = ?)",
            [day, day]).fetchone()

        def floor():
            conn.execute("BEGIN")
            for statement in floor_sql(day, previous):
                conn.execute(statement)
            conn.execute("COMMIT")

        def step():
            daily_step(conn, behavior, day)

        def calendar_step():
            """The same three steps without the rolling engagement (a FirstLast without the bits)."""
            with without_rolling_engagement():
                daily_step(conn, calendar, day)

        def rest_of_the_grain():
            steps.materialize_summaries(conn, behavior, Grain.daily, [day],
                                        sql.summary_tables(behavior.name, Grain.daily)[1:])

        def engagement():  # the three assets' one step (a multi-asset)
            steps.materialize_rolling_engagement(conn, behavior, Grain.daily, [day])

        def run_checks(groups) -> int:
            count = 0
            for group in groups:
                outcomes = {}  # one per asset: check names repeat across assets
                evaluate(conn, group, behavior, Grain.daily, day, outcomes)
                assert all(o.passed for o in outcomes.values())
                count += len(outcomes)
            return count

        def checks():
            return run_checks((FIRSTLAST_CHECKS, ACTIVATION_CHECKS, TRANSITIONS_CHECKS))

        def rest_checks():
            return run_checks((GROWTH_CHECKS, COHORTS_CHECKS))

        def engagement_checks():
            return run_checks((ENGAGEMENT_CHECKS, ENGAGEMENT_TRANSITIONS_CHECKS, STICKINESS_CHECKS))

        # The parts of the rolling engagement's ratio in turns, each the same number of times.
        timed = interleaved_medians({"floor": floor, "step": step, "calendar": calendar_step,
                                     "rest": rest_of_the_grain, "engagement": engagement}, max(reps, 5),
                                    before=lambda: conn.execute("CHECKPOINT"))
        floor_s, step_s, calendar_s = timed["floor"], timed["step"], timed["calendar"]
        rest_s, engagement_s = timed["rest"], timed["engagement"]
        checks_s, rest_checks_s = median_time(checks, reps), median_time(rest_checks, reps)
        engagement_checks_s = median_time(engagement_checks, reps)
        naive_s = median_time(lambda: conn.execute(naive_sql(day)), reps)
        differs = naive_differs(conn, day)
        # The step without the bits is the same step: it counts the same transitions.
        same = f"SELECT from_state, to_state, users FROM {{}} WHERE period_start = {sql.date_lit(day)}"
        assert sorted(conn.execute(same.format(sql.transitions_table(CALENDAR, Grain.daily))).fetchall(), key=repr) == \
            sorted(conn.execute(same.format(sql.transitions_table(BEHAVIOR, Grain.daily))).fetchall(), key=repr)
        results.facts[f"naive_differs_day_{k}"] = differs
        label = f"day {k} ({actives:,} active, {ever:,} ever seen)"
        results.add(f"{label}: floor", f"{floor_s:.3f} s")
        results.add(f"{label}: incremental step (3 assets)", f"{step_s:.3f} s", f"{step_s / floor_s:.1f}x floor")
        results.add(f"{label}: its checks ({checks()})", f"{checks_s:.3f} s")
        results.add(f"{label}: the same step without the rolling engagement (the layer's steps, FirstLast without bits)",
                    f"{calendar_s:.3f} s")
        results.add(f"{label}: the rest of the daily grain (growth, cohorts, distributions)", f"{rest_s:.3f} s",
                    f"checks ({rest_checks()}) {rest_checks_s:.3f} s")
        results.add(f"{label}: rolling engagement (engagement transitions, engagement, stickiness)",
                    f"{engagement_s:.3f} s")
        results.add(f"{label}: their checks ({engagement_checks()})", f"{engagement_checks_s:.3f} s")
        grain_before = calendar_s + rest_s
        added = (step_s + rest_s + engagement_s) / grain_before - 1
        added_to_three = (step_s + engagement_s) / calendar_s - 1
        checked_before = grain_before + checks_s + rest_checks_s
        added_checked = (step_s + rest_s + engagement_s + checks_s + rest_checks_s + engagement_checks_s) / checked_before - 1
        results.facts[f"engagement_adds_day_{k}"] = added
        results.add(f"{label}: what the bits and the 3 engagement assets add to the daily grain (6 assets)",
                    f"{added:+.0%}", f"{added_to_three:+.0%} to the 3-asset step; {added_checked:+.0%} with every"
                    " check of both; target <= +20% at 2M x 180")
        results.add(f"{label}: naive recompute", f"{naive_s:.3f} s",
                    f"{naive_s / step_s:.1f}x the step; {'identical rows' if differs == 0 else f'{differs} rows differ!'}")
        if k == marks[-1]:
            classic_s = median_time(lambda: conn.execute(classic_growth_sql(day)).fetchone(), reps)
            classic, ours = conn.execute(classic_growth_sql(day)).fetchone(), our_growth(conn, day)
            results.facts["classic_matches"] = tuple(classic) == tuple(ours)
            results.add(f"{label}: classic growth accounting", f"{classic_s:.3f} s",
                        f"{classic_s / step_s:.1f}x the step; counts {'equal' if classic == ours else 'DIFFER'}")
    conn.close()

    last_day = all_days[-1].isoformat()
    dagster_s = median_time(lambda: _dagster_partition(config, last_day), reps)
    results.add(f"day {len(all_days)}: in-process Dagster materialization (3 assets + checks)",
                f"{dagster_s:.2f} s", "target <= 2 s")
    engaged_s = median_time(lambda: _dagster_partition(config, last_day, engagement=True), reps)
    results.add(f"day {len(all_days)}: the same with the rolling engagement (6 assets + checks)",
                f"{engaged_s:.2f} s", f"{engaged_s / dagster_s - 1:+.0%}")

    conn = duckdb.connect(str(database), read_only=True)
    results.add("DuckDB file size", f"{size / 1e9:.2f} GB", "target < 4 GB at 2M x 180")
    for grain in Grain:
        for table in (sql.firstlast_table(BEHAVIOR, grain), sql.activation_table(BEHAVIOR, grain)):
            rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if DuckDBWarehouse(conn).is_view(table):
                results.add(f"storage: {table}", "0 B/row", f"a view over FirstLast ({rows:,} rows)")
                continue
            results.add(f"storage: {table}", f"{table_bytes(conn, table) / max(rows, 1):.2f} B/row", f"{rows:,} rows")
    fact_bytes = table_bytes(conn, sql.fact_table(BEHAVIOR))
    results.add(f"storage: {sql.fact_table(BEHAVIOR)}", f"{fact_bytes / max(fact_rows, 1):.2f} B/row",
                f"{fact_rows:,} rows")
    conn.close()
    for scale_users, scale_days in sorted({ONE_PASS_SCALE, (users, days)}):
        one_pass_comparison(scale_users, scale_days, workdir, results)
    if report:
        write_report(report, results, users, days, reps)
    return results


ONE_PASS_SCALE = (500_000, 120)  # the smaller scale, measured in every run besides --users x --days


def one_pass_comparison(users: int, days: int, workdir: Path, results: Results) -> None:
    """The daily backfill through Dagster (fact, FirstLast, activation, transitions, with checks)
    against the one-pass SQL reference that builds the same tables, in the same database."""
    events = workdir / f"events_{users}x{days}.parquet"
    if not events.exists():
        write_benchmark_events(events, SampleSpec(users=users, days=days, start=START, seed=7))
    database = workdir / f"onepass_{users}x{days}.duckdb"
    for stale in workdir.glob(f"onepass_{users}x{days}.duckdb*"):
        stale.unlink()
    config = config_for(events, database, days)
    print(f"daily backfill against the one-pass reference at {users:,} x {days}:", flush=True)
    backfill = run_backfill(config, workdir, daily_only=True)
    results.facts["failed_checks"] = results.facts.get("failed_checks", 0) + sum(
        item["failed_checks"] for item in backfill["runs"])
    floor = sum(item["seconds"] for item in backfill["runs"] if item.get("floor"))
    runs = sum(item["seconds"] for item in backfill["runs"] if not item.get("floor"))
    with duckdb.connect(str(database), config={"memory_limit": MEMORY_LIMIT}) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        began = time.perf_counter()
        for statement in one_pass_sql(config):
            conn.execute(statement)
        one_pass = time.perf_counter() - began
        differs = one_pass_differs(conn, config)
    results.facts[f"one_pass_differs_{users}x{days}"] = differs
    label = f"{users:,} x {days}, daily grain"
    wall = backfill["wall"] - floor  # the child process, less the no-op runs it made after the backfill
    results.add(f"{label}: backfill through Dagster (fact, FirstLast, activation, transitions, checks)",
                f"{wall:.1f} s", f"{wall / one_pass:.2f}x the one-pass reference (target <= 1.0x);"
                f" its runs {runs:.1f} s, the rest is the process start")
    results.add(f"{label}: one-pass SQL reference building the same tables", f"{one_pass:.1f} s",
                "identical rows" if differs == 0 else f"{differs} rows differ!")
    results.add(f"{label}: Dagster's own cost of the same runs (no-op assets, same partitions and metadata)",
                f"{floor:.1f} s", f"{floor / one_pass:.2f}x the one-pass reference; the backfill's runs less it:"
                f" {runs - floor:.1f} s = {(runs - floor) / one_pass:.2f}x")
    for stale in workdir.glob(f"onepass_{users}x{days}.duckdb*"):
        stale.unlink()


def _dagster_partition(config: ActivationConfig, partition: str, engagement: bool = False) -> None:
    import dagster as dg

    from activation_assets.orchestration.definitions import build_definitions

    defs = build_definitions(config, check_files=False)
    keys = [sql.firstlast_table(BEHAVIOR, Grain.daily), sql.activation_table(BEHAVIOR, Grain.daily),
            sql.transitions_table(BEHAVIOR, Grain.daily)] + (sql.engagement_tables(BEHAVIOR) if engagement else [])
    result = dg.materialize(list(defs.assets), selection=keys, resources=dict(defs.resources),
                            instance=dg.DagsterInstance.ephemeral(), partition_key=partition,
                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    assert result.success


def write_report(path: Path, results: Results, users: int, days: int, reps: int) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m benchmarks --users {users} --days {days} --reps {reps}` on"
        f" {dt.date.today()}, commit `{commit()}`.",
        "",
        f"Machine: {machine()}. Fact: {results.facts.get('events', 0):,} events of"
        f" {results.facts.get('users', 0):,} users over {days} days. Times are medians of {reps} repetitions,"
        " measured side by side in one run.",
        "",
        "| measure | value | note |",
        "| --- | ---: | --- |",
        *[f"| {m} | {v} | {n} |" for m, v, n in results.rows],
        "",
    ]
    path.write_text("\n".join(lines))
    print(f"report written to {path}", flush=True)
