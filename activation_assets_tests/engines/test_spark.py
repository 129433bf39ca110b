"""The same configured graph on Apache Spark (local mode) and on DuckDB: every table, row for row.

One behavior, all grains, on edge-case data: integer ids beyond 2^53, naive UTC timestamps at
local midnight edges, America/New_York across the March DST change, Sunday weeks, a start that is
neither a week nor a month start, rows outside the window, nulls and duplicates. Then late data,
and a fact day that loses every row, re-materialized through the CLI's window on both engines.

All Spark tests share one session (a JVM's Hive metastore is fixed when the session starts), each
scenario in its own Spark database.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from activation_assets.checks import invariants as inv
from activation_assets import cli
from activation_assets.pipeline import plan as planning
from activation_assets.cli import runner
from activation_assets.pipeline import steps
from activation_assets.config import Grain, load_config
from activation_assets.tables import forecast_tables, grain_tables
from activation_assets.periods import existing_periods
from activation_assets.models.sql import PARTITION_LOG, activation_view, fact_table
from activation_assets.engines import ActivationError, open_warehouse

from .. import reference
from ..conftest import (
    ACTIVATION_COLUMNS, _platform, as_set, edge_events, local_instant, run_graph, table_rows, write_config,
    write_parquet_source,
)

pytest.importorskip("pyspark", reason="`make spark` installs PySpark (the `spark` extra)")
pytestmark = [pytest.mark.spark, pytest.mark.slow]

SPEC = reference.Spec("America/New_York", dt.date(2025, 2, 24), dt.date(2025, 3, 31), "sunday")
USERS = list(range(1, 31)) + [9_007_199_254_740_993, 2**62 + 7]
GRAINS = (Grain.daily, Grain.weekly, Grain.monthly)


def _behavior(source: Path) -> dict:
    return {"name": "visited", "source": {"parquet": str(source), "where": "event_name = 'visit'"},
            "user_column": "uid", "time_column": "ts", "start_date": SPEC.start_date, "end_date": SPEC.end_date,
            "timezone": SPEC.timezone, "week_start": SPEC.week_start,
            "segments": [{"column": "platform"}, {"name": "device", "column": "platform", "values": ["ios"]}],
            "growth_model": {"window_days": 7, "horizon_days": 30,
                             "scenarios": {"lift": {"curr": 0.05, "drr": -0.5, "new_users": 1.5}}}}


def _spark_config(directory: Path, warehouse_dir: Path, database: str, source: Path) -> Path:
    path = write_config(directory, [_behavior(source)])
    document = yaml.safe_load(path.read_text())
    del document["database"]
    document["warehouse"] = {"spark": {
        "master": "local[2]", "warehouse_dir": str(warehouse_dir), "database": database,
        "conf": {"spark.sql.shuffle.partitions": 2, "spark.ui.enabled": False},
    }}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# The partition log's write times, and the fact days' source hashes (each engine hashes its own way).
ENGINE_SPECIFIC = ("written_at", "source_hash")


def _tables() -> list[str]:
    return [fact_table("visited")] + [t for g in GRAINS for t in grain_tables("visited", g)] + forecast_tables("visited")


def _rows(names: list[str], rows: list[tuple]) -> list[tuple]:
    """Rows as tuples in column-name order (Spark keeps partition columns last), sorted with nulls first."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    values = [tuple(row[i] for i in order) for row in rows]
    return sorted(values, key=lambda r: tuple((v is not None, v) for v in r))


def duckdb_tables(config: Path) -> dict[str, list[tuple]]:
    database = load_config(config).database
    out = {}
    for table in [*_tables(), PARTITION_LOG]:
        rows = [{k: v for k, v in row.items() if k not in ENGINE_SPECIFIC} for row in table_rows(database, table)]
        names = list(rows[0]) if rows else []
        out[table] = (sorted(names), _rows(names, [tuple(r.values()) for r in rows]))
    return out


def spark_tables(config: Path) -> dict[str, list[tuple]]:
    out = {}
    with open_warehouse(load_config(config)) as warehouse:
        for table in [*_tables(), PARTITION_LOG]:
            names, rows = warehouse.query_named(f'SELECT * FROM "{table}"')
            keep = [i for i, name in enumerate(names) if name not in ENGINE_SPECIFIC]
            names, rows = [names[i] for i in keep], [tuple(row[i] for i in keep) for row in rows]
            out[table] = (sorted(names) if rows else [], _rows(names, rows))
    return out


def assert_same_tables(duck: dict, spark: dict) -> None:
    assert set(duck) == set(spark)
    for table in duck:
        duck_names, duck_rows = duck[table]
        spark_names, spark_rows = spark[table]
        assert spark_names == duck_names, table
        assert len(spark_rows) == len(duck_rows), table
        assert spark_rows == duck_rows, table


@pytest.fixture(scope="module")
def spark_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spark_warehouse")


@pytest.fixture(scope="module")
def engines(tmp_path_factory, spark_dir):
    """The graph materialized from one source on both engines."""
    root = tmp_path_factory.mktemp("engines")
    rows = edge_events(SPEC, seed=21, users=USERS)
    source = root / "events" / "part-1.parquet"
    write_parquet_source(source, rows)
    (root / "duckdb").mkdir()
    (root / "spark").mkdir()
    duck = write_config(root / "duckdb", [_behavior(source)])
    spark = _spark_config(root / "spark", spark_dir, "graph", source)
    failed = {"duckdb": run_graph(duck), "spark": run_graph(spark)}
    return {"rows": rows, "source": source, "duckdb": duck, "spark": spark, "failed": failed}


def test_every_table_equals_duckdb_row_for_row(engines):
    duck, spark = duckdb_tables(engines["duckdb"]), spark_tables(engines["spark"])
    assert all(duck[t][1] for t in _tables()), "every table has rows to compare"
    assert_same_tables(duck, spark)


def test_every_check_passed_on_spark(engines):
    assert engines["failed"] == {"duckdb": 0, "spark": 0}


def test_spark_activation_equals_the_reference(engines):
    """Independent of DuckDB: the brute-force reference of the contract."""
    with open_warehouse(load_config(engines["spark"])) as warehouse:
        for grain in GRAINS:
            names, rows = warehouse.query_named(f"SELECT * FROM visited_activation_{grain}")
            actual = [dict(zip(names, row)) for row in rows]
            expected = reference.activation(engines["rows"], SPEC, grain.value)
            assert len(actual) == len(expected)
            assert as_set(actual, ACTIVATION_COLUMNS) == as_set(expected, ACTIVATION_COLUMNS)
            assert {2**62 + 7, 9_007_199_254_740_993} <= {r["user_id"] for r in actual}


def test_spark_engagement_equals_the_reference(engines):
    """The rolling engagement on Spark against the reference: the bits and both states of every
    (user, day), and the daily DAU/WAU/MAU, state counts and rates."""
    with open_warehouse(load_config(engines["spark"])) as warehouse:
        names, rows = warehouse.query_named(
            "SELECT period_start, user_id, days_seen_bits, engagement_state, prev_engagement_state"
            " FROM visited_activation_daily")
        expected = reference.engagement_rows(engines["rows"], SPEC)
        assert {tuple(row) for row in rows} == {tuple(r[n] for n in names) for r in expected}
        names, rows = warehouse.query_named("SELECT * FROM visited_engagement_daily")
    actual = {row[names.index("period_start")]: dict(zip(names, row)) for row in rows}
    for day in reference.engagement_daily(engines["rows"], SPEC):
        if day["period_start"] in actual:
            got = actual[day["period_start"]]
            assert {k: got[k] for k in day} == pytest.approx(day), day["period_start"]


def test_spark_segments_equal_the_reference(engines):
    """The segment transitions on Spark against the reference (the platform changes within users'
    rows and is sometimes missing; `device` maps every value but ios to 'other')."""
    rows = [(u, t, _platform(u, t)) for u, t in engines["rows"]]
    with open_warehouse(load_config(engines["spark"])) as warehouse:
        for grain in GRAINS:
            for name, values in (("platform", None), ("device", ["ios"])):
                expected = reference.segment_transitions(
                    reference.segmented_activation(rows, SPEC, grain.value, name, values), name)
                names, got = warehouse.query_named(
                    f"SELECT * FROM visited_segment_transitions_{grain} WHERE segment = '{name}'")
                assert {tuple(sorted(zip(names, row))) for row in got} == {
                    tuple(sorted(r.items())) for r in expected}, (grain, name)


def test_late_data_and_an_emptied_day_rerun_the_same_on_both_engines(engines, tmp_path):
    """A corrected source (one day loses all its rows, late rows arrive for another): each engine finds
    the two changed days itself and re-materializes them and every later partition; Spark's partition
    overwrite must drop the emptied day."""
    emptied, late_day = dt.date(2025, 3, 25), dt.date(2025, 3, 27)
    kept = [(u, t) for u, t in engines["rows"]
            if t is None or reference.local_date(t, SPEC.timezone) != emptied]
    assert len(kept) < len(engines["rows"])
    late = [(3, local_instant(late_day, 60, SPEC.timezone)), (777, local_instant(late_day, 86000, SPEC.timezone))]
    corrected = kept + late
    shutil.copy(engines["source"], tmp_path / "before.parquet")
    write_parquet_source(engines["source"], corrected)
    try:
        for engine in ("duckdb", "spark"):
            config = load_config(engines[engine])
            instance = dg.DagsterInstance.ephemeral()
            # No window given: the changed days are found by their fingerprints (the file changed).
            findings = planning.find_outdated(config, list(config.behaviors))
            assert findings.changes["visited"].outdated == [emptied, late_day], engine
            assert findings.changes["visited"].days[emptied].rows_now == 0
            # Everything is materialized (the fixture's runs used a throwaway Dagster instance).
            materialized = {p for g in GRAINS for p in existing_periods(config.behaviors[0], g)}
            runs = planning.plan(config, list(config.behaviors), None, None, None, lambda table: materialized,
                            outdated_days=findings.outdated_days(), rebuilt_from=findings.rebuilt_from())
            assert [p for r in runs if r.label == "fact_visited" for p in r.periods] == [emptied, late_day]
            assert next(r for r in runs if r.label == "visited daily").periods[0] == emptied
            assert runner.execute(config, runs, instance=instance) == 0
        duck, spark = duckdb_tables(engines["duckdb"]), spark_tables(engines["spark"])
        assert_same_tables(duck, spark)
        fact_days = {row[duck[fact_table("visited")][0].index("period_start")] for row in spark[fact_table("visited")][1]}
        assert emptied not in fact_days and late_day in fact_days
        with open_warehouse(load_config(engines["spark"])) as warehouse:
            names, rows = warehouse.query_named("SELECT * FROM visited_activation_daily")
        expected = reference.activation(corrected, SPEC, "daily")
        assert as_set([dict(zip(names, r)) for r in rows], ACTIVATION_COLUMNS) == as_set(expected, ACTIVATION_COLUMNS)
    finally:
        shutil.copy(tmp_path / "before.parquet", engines["source"])


def test_rewriting_a_partition_on_spark_is_idempotent(engines):
    config = load_config(engines["spark"])
    behavior = config.behaviors[0]
    period = existing_periods(behavior, Grain.weekly)[2]
    before = spark_tables(engines["spark"])
    with open_warehouse(config) as warehouse:
        for _ in range(2):
            steps.materialize_firstlast(warehouse, behavior, Grain.weekly, [period])
            steps.materialize_activation(warehouse, behavior, Grain.weekly, [period])
    assert spark_tables(engines["spark"]) == before


def test_checks_catch_a_corrupted_partition_on_spark(engines):
    config = load_config(engines["spark"])
    behavior = config.behaviors[0]
    period = existing_periods(behavior, Grain.weekly)[2]
    with open_warehouse(config) as warehouse:
        session = warehouse.session
        session.sql("CREATE DATABASE IF NOT EXISTS corrupt")
        for table in ("fact_visited", "visited_activation_weekly"):
            session.sql(f"CREATE TABLE corrupt.{table} USING parquet AS SELECT * FROM graph.{table}")
        # One user counted twice, and one retained user who was in fact new.
        session.sql(f"""INSERT INTO corrupt.visited_activation_weekly
            SELECT * FROM graph.visited_activation_weekly WHERE period_start = DATE '{period}' LIMIT 1""")
        session.catalog.setCurrentDatabase("corrupt")
        outcomes: dict[str, inv.CheckOutcome] = {}
        inv.evaluate(warehouse, inv.ACTIVATION_CHECKS, behavior, Grain.weekly, period, outcomes)
    failed = {name for name, outcome in outcomes.items() if not outcome.passed}
    assert "one_row_per_user" in failed
    assert outcomes["one_row_per_user"].examples, "the failing check shows example rows"


def test_engagement_checks_catch_corruptions_on_spark(engines):
    """E1-E5 on Spark: each corruption of the DuckDB corruption tests, made with DataFrames (Spark's
    Parquet tables take no UPDATE), fails its check."""
    from pyspark.sql import functions as F

    config = load_config(engines["spark"])
    behavior = config.behaviors[0]
    day = dt.date(2025, 3, 20)
    on_day = F.col("period_start") == F.lit(day)
    with open_warehouse(config) as warehouse:
        session = warehouse.session
        session.sql("CREATE DATABASE IF NOT EXISTS corrupt_engagement")

        def write(name, frame):
            frame.write.mode("overwrite").format("parquet").saveAsTable(f"corrupt_engagement.{name}")

        fact = session.table("graph.fact_visited")
        extra = fact.where(F.col("period_start") == F.lit(day - dt.timedelta(days=3))).limit(1).withColumn(
            "user_id", F.lit(123456789).cast("bigint"))
        write("fact_visited", fact.unionByName(extra))  # E2: one more user in the week
        write("visited_activation_daily", session.table("graph.visited_activation_daily"))
        engagement = session.table("graph.visited_engagement_daily")
        write("visited_engagement_daily", engagement  # E1 (one more new user), E3 (one more dormant)
              .withColumn("new", F.when(on_day, F.col("new") + 1).otherwise(F.col("new")))
              .withColumn("dormant", F.when(on_day, F.col("dormant") + 1).otherwise(F.col("dormant"))))
        transitions = session.table("graph.visited_engagement_transitions_daily")
        first = transitions.where(on_day & F.col("from_state").isNotNull()).orderBy("from_state", "to_state").first()
        hit = on_day & (F.col("from_state") == first["from_state"]) & (F.col("to_state") == first["to_state"])
        write("visited_engagement_transitions_daily",  # E4: yesterday's states do not carry over
              transitions.withColumn("users", F.when(hit, F.col("users") + 1).otherwise(F.col("users"))))
        stickiness = session.table("graph.visited_stickiness_daily")
        row = stickiness.where(on_day & (F.col("window") == "month")).orderBy("active_days").first()
        hit = on_day & (F.col("window") == "month") & (F.col("active_days") == row["active_days"])
        write("visited_stickiness_daily",  # E5: the month's rows no longer add up
              stickiness.withColumn("users", F.when(hit, F.col("users") + 1).otherwise(F.col("users"))))
        session.catalog.setCurrentDatabase("corrupt_engagement")
        # the day alone (each check's own query) and with the day before (the checks over a span)
        runs: dict[int, dict[str, dict[str, inv.CheckOutcome]]] = {}
        for periods in ([day], [day - dt.timedelta(days=1), day]):
            outcomes = runs.setdefault(len(periods), {})
            for name, checks in (("engagement", inv.ENGAGEMENT_CHECKS), ("transitions",
                                 inv.ENGAGEMENT_TRANSITIONS_CHECKS), ("stickiness", inv.STICKINESS_CHECKS)):
                inv.evaluate_range(warehouse, checks, behavior, Grain.daily, periods, outcomes.setdefault(name, {}))
        session.catalog.setCurrentDatabase("graph")
    for outcomes in runs.values():
        failed = {(name, check) for name, group in outcomes.items() for check, o in group.items() if day in o.failing}
        assert failed >= {("engagement", "agrees_with_activation"), ("engagement", "windows_match_fact"),
                          ("engagement", "states_add_up"), ("transitions", "prev_state_is_previous_state"),
                          ("stickiness", "adds_up_to_active_users")}, failed
        assert "users in the fact from" in outcomes["engagement"]["windows_match_fact"].summary()


def test_activation_check_on_spark(engines, capsys):
    capsys.readouterr()
    assert cli.main(["check", "--config", str(engines["spark"]), "--grain", "weekly"]) == 0
    out = capsys.readouterr().out
    assert "PASS visited_transitions_weekly.equals_grouped_activation" in out and " 0 failed." in out


def test_a_missing_source_is_a_clear_error_on_spark(engines, tmp_path):
    config = load_config(engines["spark"])
    behavior = config.behaviors[0].model_copy(
        update={"source": config.behaviors[0].source.model_copy(update={"parquet": str(tmp_path / "nope/*.parquet")})})
    with open_warehouse(config) as warehouse, pytest.raises(ActivationError) as error:
        steps.describe_source(warehouse, behavior)
    message = str(error.value)
    assert message.startswith("behavior 'visited': cannot read its source (parquet ")
    assert "nope" in message and "Traceback" not in message


def test_the_spark_graph_is_labelled_spark(engines):
    from activation_assets.orchestration.definitions import build_definitions

    defs = build_definitions(load_config(engines["spark"]))
    for spec in defs.resolve_all_asset_specs():
        assert "dagster/kind/spark" in spec.tags, spec.key
        assert "dagster/kind/duckdb" not in spec.tags, spec.key


@pytest.mark.ui
def test_a_backfill_from_the_ui_runs_on_spark(engines, tmp_path):
    """dagster dev + daemon, the fact and the monthly chain backfilled at once: the backfill's runs
    overlap, each run worker starts its own JVM, and the pool (run granularity) makes them take
    turns on the embedded metastore. The tables equal DuckDB's over the same source."""
    from ..dagster_dev import DagsterDev

    def monthly_only(path: Path) -> Path:
        document = yaml.safe_load(path.read_text())
        document["behaviors"][0]["grains"] = ["monthly"]
        del document["behaviors"][0]["growth_model"]  # it needs the daily grain
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    (tmp_path / "spark").mkdir()
    (tmp_path / "duckdb").mkdir()
    config = monthly_only(_spark_config(tmp_path / "spark", tmp_path / "warehouse", "ui", engines["source"]))
    duck_config = monthly_only(write_config(tmp_path / "duckdb", [_behavior(engines["source"])]))
    keys = [fact_table("visited"), *grain_tables("visited", Grain.monthly)[:3]]  # FirstLast, activation, transitions
    dev = DagsterDev(config, tmp_path / "dagster_home", tmp_path / "dagster_dev.log").start()
    try:
        backfill = dev.wait_for_backfill(dev.backfill_all(keys), timeout=900)
        failures = [f for run in backfill["runs"] for f in dev.step_failures(run["id"])]
    finally:
        dev.stop()
    assert backfill["status"] == "COMPLETED_SUCCESS", failures
    assert len(backfill["runs"]) >= 2
    assert run_graph(duck_config) == 0
    database = load_config(duck_config).database
    # This process's Spark session has its own metastore: read the Spark tables' Parquet files with
    # DuckDB, and the activation view as the same view over FirstLast's files.
    firstlast, activation = grain_tables("visited", Grain.monthly)[:2]
    for table in keys:
        with duckdb.connect() as conn:
            source = firstlast if table == activation else table
            files = tmp_path / "warehouse" / "ui.db" / source / "**" / "*.parquet"
            conn.execute(f"CREATE VIEW \"{source}\" AS SELECT * FROM read_parquet('{files}', hive_partitioning = true)")
            segments = load_config(config).behaviors[0].segments
            select = (activation_view(firstlast, Grain.monthly, segments=segments) if table == activation
                      else f'SELECT * FROM "{table}"')
            cursor = conn.execute(select)
            names, rows = [d[0] for d in cursor.description], cursor.fetchall()
        expected = table_rows(database, table)
        assert sorted(names) == sorted(expected[0]), table
        assert _rows(names, rows) == _rows(list(expected[0]), [tuple(r.values()) for r in expected]), table


def test_a_failed_spark_write_leaves_old_rows_or_a_missing_partition(engines):
    """A job that fails mid-write (an injected runtime error) must not leave a partition empty while
    the log still lists it: the next FirstLast would then treat every user as new."""
    config = load_config(engines["spark"])
    behavior = config.behaviors[0]
    table = "visited_activation_weekly"
    period = existing_periods(behavior, Grain.weekly)[2]
    count = f"SELECT count(*) FROM {table} WHERE period_start = DATE '{period}'"
    # Reads another table, so the failure comes from the write's own job, after planning.
    failing = f"""SELECT period_start, user_id, 'new' AS state, CAST(NULL AS VARCHAR) AS prev_state,
        first_active_period, last_active_period,
        CAST(concat('not a number ', CAST(user_id AS VARCHAR)) AS INTEGER) AS streak,
        0 AS inactive_streak, CAST(NULL AS INTEGER) AS return_gap, active_periods
        FROM visited_firstlast_weekly WHERE period_start = DATE '{period}'"""
    try:
        with open_warehouse(config) as warehouse:
            before = warehouse.query_one(count)[0]
            assert before > 0
            with pytest.raises(warehouse.errors):
                warehouse.replace_partition(table, period, failing)
            warehouse.session.sql(f"REFRESH TABLE {table}")  # what is on disk now, not a cached listing
            after = warehouse.query_one(count)[0]
            logged = period in warehouse.recorded_periods(table, period, period)
            assert after == before or not logged, "never empty and logged"
            if not logged:  # the guard refuses to build on it
                later = existing_periods(behavior, Grain.weekly)[3]
                with pytest.raises(ActivationError, match=f"partition {period} of {table} has not been materialized"):
                    steps.materialize_activation(warehouse, behavior, Grain.weekly, [later])
    finally:  # leave the module's graph as it was for the other tests
        with open_warehouse(config) as warehouse:
            steps.materialize_activation(warehouse, behavior, Grain.weekly, [period])


def test_a_csv_source_gives_the_same_types_and_rows_on_both_engines(engines, tmp_path):
    """Spark's own CSV inference reads "007" and "7" as one integer user; DuckDB keeps them apart."""
    from activation_assets.config import SourceConfig
    from activation_assets.engines.duckdb import DuckDBWarehouse

    csv = tmp_path / "ids.csv"
    csv.write_text("user_id,occurred_at,created,device\n"
                   "007,2025-03-01 10:00:00,2025-03-01T10:00:00+09:00,ios\n"
                   "7,2025-03-01 11:00:00,2025-03-01T11:00:00+09:00,web\n"
                   "12,2025-03-02 10:00:00,2025-03-02T10:00:00-05:00,ios\n")
    behavior = load_config(engines["spark"]).behaviors[0].model_copy(update={
        "source": SourceConfig(csv=str(csv)), "user_column": "user_id", "time_column": "occurred_at"})

    def read(warehouse) -> tuple[dict, list]:
        relation, columns = steps.describe_source(warehouse, behavior)
        return columns, sorted(warehouse.query(f"SELECT user_id, occurred_at, device FROM {relation}"))

    with duckdb.connect() as conn:
        duck = read(DuckDBWarehouse(conn))
    with open_warehouse(load_config(engines["spark"])) as warehouse:
        spark = read(warehouse)
    assert duck[0] == {"user_id": "VARCHAR", "occurred_at": "TIMESTAMP", "created": "TIMESTAMP WITH TIME ZONE",
                       "device": "VARCHAR"}
    assert spark == duck
    assert [row[0] for row in spark[1]] == ["007", "12", "7"]


def test_an_upstream_asset_is_read_from_the_same_warehouse_on_both_engines(engines, tmp_path, spark_dir):
    """`source: {asset: lake/visits}` reads the relation `visits` of the engine's own warehouse."""
    behavior = {**_behavior(engines["source"]), "source": {"asset": "lake/visits"}, "grains": ["monthly"]}
    del behavior["growth_model"]  # it needs the daily grain
    select = "SELECT * FROM {} WHERE event_name = 'visit'"
    (tmp_path / "duckdb").mkdir()
    duck = write_config(tmp_path / "duckdb", [behavior])
    with duckdb.connect(str(load_config(duck).database)) as conn:
        conn.execute("CREATE TABLE visits AS " + select.format(f"read_parquet('{engines['source']}')"))
    (tmp_path / "spark").mkdir()
    spark = _spark_config(tmp_path / "spark", spark_dir, "upstream", engines["source"])
    document = yaml.safe_load(spark.read_text())
    document["behaviors"] = [json_safe(behavior)]
    spark.write_text(yaml.safe_dump(document, sort_keys=False))
    with open_warehouse(load_config(spark)) as warehouse:
        warehouse.session.sql("CREATE TABLE upstream.visits USING parquet AS "
                              + select.format(f"parquet.`{engines['source']}`"))
    assert run_graph(duck) == 0 and run_graph(spark) == 0
    expected = as_set(reference.activation(engines["rows"], SPEC, "monthly"), ACTIVATION_COLUMNS)
    assert as_set(table_rows(load_config(duck).database, "visited_activation_monthly"), ACTIVATION_COLUMNS) == expected
    with open_warehouse(load_config(spark)) as warehouse:
        names, rows = warehouse.query_named("SELECT * FROM visited_activation_monthly")
    assert as_set([dict(zip(names, r)) for r in rows], ACTIVATION_COLUMNS) == expected


def json_safe(value):
    """YAML-dumpable: dates as ISO strings."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value.isoformat() if isinstance(value, dt.date) else value


def test_every_relation_spark_creates_has_the_columns_of_its_schema(engines):
    """The tables Spark creates carry the columns `tables` defines, in DuckDB's type names (Spark keeps
    partition columns last and enforces no NOT NULL, so names and types are compared)."""
    from activation_assets import tables
    from activation_assets.models import sql

    config = load_config(engines["spark"])
    behavior = config.behaviors[0]
    with open_warehouse(config) as warehouse:
        fact = warehouse.table_column_types(sql.fact_table(behavior.name))
        source = {tables.USER: fact["user_id"], tables.SOURCE: fact["occurred_at"]}
        assert {c.name: source.get(c.type, c.type) for c in tables.FACT.columns}.items() <= fact.items()
        for grain in behavior.grains:
            for relation in tables.per_grain(grain):
                name = relation.table(behavior.name, grain)
                extra = tables.segment_columns(behavior.segments, relation)
                expected = {c.name: source.get(c.type, c.type) for c in (*relation.columns_for(grain), *extra)}
                assert warehouse.table_column_types(name) == expected, name
        for relation in tables.FORECAST_RELATIONS:
            expected = {c.name: c.type for c in relation.columns}
            assert warehouse.table_column_types(relation.table(behavior.name)) == expected, relation.table(behavior.name)
        for record in tables.RECORDS:
            expected = {c.name: c.type for c in record.columns}
            assert warehouse.table_column_types(record.table()) == expected, record.table()
