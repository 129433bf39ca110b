"""The warehouse setting and the one-source SQL rendering (no Spark needed: sqlglot only)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
import sqlglot

from activation_assets.checks import invariants as inv
from activation_assets import tables
from activation_assets.models import sql
from activation_assets.config import ConfigError, Grain, load_config, parse_config
from activation_assets.engines.dialect import render
from activation_assets.engines.duckdb import DuckDBWarehouse

BEHAVIOR = {"name": "visited", "source": {"parquet": "events/*.parquet"}, "start_date": "2025-01-01"}


def _parse(tmp_path: Path, **top) -> object:
    return parse_config({**top, "behaviors": [BEHAVIOR]}, tmp_path / "activation.yaml")


def test_duckdb_is_the_default_and_database_is_its_short_form(tmp_path):
    default = _parse(tmp_path)
    assert default.engine == "duckdb" and default.database == str(tmp_path / "data" / "activation.duckdb")
    short = _parse(tmp_path, database="w.duckdb", memory_limit="1GB")
    long = _parse(tmp_path, warehouse={"duckdb": {"database": "w.duckdb", "memory_limit": "1GB"}})
    assert short.warehouse == long.warehouse
    assert short.database == str(tmp_path / "w.duckdb") and short.memory_limit == "1GB"


def test_spark_setting(tmp_path):
    config = _parse(tmp_path, warehouse={"spark": {
        "master": "local[2]", "warehouse_dir": "wh", "database": "growth",
        "conf": {"spark.sql.shuffle.partitions": 8, "spark.ui.enabled": False}}})
    spark = config.warehouse.spark
    assert config.engine == "spark" and config.database is None
    assert spark.warehouse_dir == str(tmp_path / "wh")
    assert spark.conf == {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false"}
    remote = _parse(tmp_path, warehouse={"spark": {"warehouse_dir": "s3://bucket/warehouse"}})
    assert remote.warehouse.spark.warehouse_dir == "s3://bucket/warehouse"  # URLs are not paths to resolve
    assert remote.warehouse.spark.master is None


@pytest.mark.parametrize("top, fragment", [
    ({"database": "a.duckdb", "warehouse": {"duckdb": {"database": "b.duckdb"}}}, "use one or the other"),
    ({"warehouse": {"duckdb": {}, "spark": {}}}, "warehouse is exactly one of"),
    ({"warehouse": {"spark": {"database": "Bad-Name"}}}, "is not a lowercase identifier"),
    ({"warehouse": {"snowflake": {}}}, "warehouse: unknown key 'snowflake'"),
])
def test_warehouse_mistakes_are_explained(tmp_path, top, fragment):
    with pytest.raises(ConfigError) as error:
        _parse(tmp_path, **top)
    assert fragment in str(error.value)


def test_spark_session_settings(tmp_path):
    pytest.importorskip("dagster_pyspark")
    from activation_assets.engines.spark import spark_config

    config = _parse(tmp_path, warehouse={"spark": {"master": "local[2]", "warehouse_dir": "wh",
                                                   "conf": {"spark.sql.shuffle.partitions": 3}}})
    settings = spark_config(config.warehouse.spark)
    assert settings["spark.master"] == "local[2]"
    assert settings["spark.sql.session.timeZone"] == "UTC"
    assert settings["spark.sql.sources.partitionOverwriteMode"] == "dynamic"
    assert settings["spark.sql.catalogImplementation"] == "hive"
    assert str(tmp_path / "wh" / "metastore_db") in settings["spark.hadoop.javax.jdo.option.ConnectionURL"]
    assert settings["spark.sql.shuffle.partitions"] == "3"
    cluster = _parse(tmp_path, warehouse={"spark": {"conf": {"spark.hadoop.hive.metastore.uris": "thrift://m:9083"}}})
    settings = spark_config(cluster.warehouse.spark)
    assert "spark.master" not in settings and "spark.hadoop.javax.jdo.option.ConnectionURL" not in settings


def test_the_spark_example_config_loads(project_root):
    config = load_config(project_root / "activation.spark.yaml")
    assert config.engine == "spark" and config.warehouse.spark.database == "activation"


# --- one SQL source, rendered for Spark -------------------------------------------------------------

P, Q, NEXT = dt.date(2025, 3, 10), dt.date(2025, 3, 3), dt.date(2025, 3, 17)


def _model_statements() -> list[str]:
    relation = sql.filtered("read_parquet('x.parquet')", "event_name = 'visit'")
    statements = [
        sql.stage_select(relation, "uid", "ts", ["event_name"], "VARCHAR", "Asia/Seoul", P, NEXT),
        sql.stage_select(relation, "uid", "ts", ["event_name"], "TIMESTAMP", "Asia/Seoul", P, NEXT),
        sql.stage_select(relation, "uid", "ts", [], "TIMESTAMP WITH TIME ZONE", "UTC", P, NEXT, window=(Q, None)),
        sql.stage_profile(Q, NEXT),
        sql.unparseable_examples_in(),
        sql.stage_day_counts(P, NEXT, ["event_name"]),
        sql.fact_select([P, NEXT]),
        sql.maybe_outside("read_parquet('x.parquet')", "ts", "TIMESTAMP WITH TIME ZONE", Q, NEXT),
        sql.firstlast_select("fl", "fact", P, Q, NEXT, is_first=False),
        sql.summary_profile_select("a", [Q, P]),
        sql.transitions_select("profile"),
        sql.growth_select("profile", [Q, P]),
        sql.distributions_select("profile"),
        sql.state_counts_by_period("a", P, P),
        sql.engagement_profile_select("a", [Q, P], 7, 28),
        sql.engagement_transitions_select("profile", 7, 28),
        sql.stickiness_select("profile"),
        sql.engagement_select("t", [Q, P]),
    ]
    for grain in Grain:
        statements += [sql.activation_view("fl", grain), sql.cohorts_select("profile", grain)]
    return statements


def _check_statements() -> list[str]:
    from activation_assets.config import BehaviorConfig

    behavior = BehaviorConfig.model_validate(BEHAVIOR)
    out = []
    for grain in Grain:
        context = inv.period_context(behavior, grain, dt.date(2025, 3, 1) if grain is Grain.monthly else P)
        for check in (*inv.FIRSTLAST_CHECKS, *inv.ACTIVATION_CHECKS, *inv.TRANSITIONS_CHECKS, *inv.GROWTH_CHECKS,
                      *inv.COHORTS_CHECKS):
            out += [check.violations(context)] + ([check.examples(context)] if check.examples else [])
        checks = inv.checks_for((*inv.FIRSTLAST_CHECKS, *inv.ACTIVATION_CHECKS, *inv.TRANSITIONS_CHECKS,
                                 *inv.ENGAGEMENT_TRANSITIONS_CHECKS), grain)
        spanned = [(i, check) for i, check in enumerate(checks) if check.over_span]
        assert spanned
        out.append(inv.span_statement(spanned, inv.Span(behavior, grain, (context.start,))))
    return out


def test_every_statement_renders_for_spark():
    for statement in _model_statements() + _check_statements():
        spark = render(statement, "spark")
        assert "TIMEZONE(" not in spark.upper(), spark  # DuckDB's function; Spark has none
        assert '"' not in spark.replace("\\'", ""), spark  # identifiers are backquoted
        sqlglot.parse_one(spark, read="spark")  # and Spark's grammar takes it back


@pytest.mark.parametrize("time_type, expected", [
    ("TIMESTAMP", "CAST(FROM_UTC_TIMESTAMP(TO_UTC_TIMESTAMP(CAST(`ts` AS TIMESTAMP_NTZ), 'UTC'), 'Asia/Seoul') AS DATE)"),
    ("TIMESTAMP WITH TIME ZONE", "CAST(FROM_UTC_TIMESTAMP(`ts`, 'Asia/Seoul') AS DATE)"),
    ("VARCHAR", "CAST(FROM_UTC_TIMESTAMP(TRY_CAST(`ts` AS TIMESTAMP), 'Asia/Seoul') AS DATE)"),
])
def test_local_dates_render_to_spark_functions(time_type, expected):
    """DuckDB's timezone(zone, x): naive x -> the instant (to_utc_timestamp); an instant -> the wall clock."""
    statement = "SELECT " + sql.local_date_expr(sql.instant_expr("ts", time_type), "Asia/Seoul")
    assert render(statement, "spark") == "SELECT " + expected


@pytest.mark.parametrize("time_type", ["TIMESTAMP", "TIMESTAMP WITH TIME ZONE"])
@pytest.mark.parametrize("end", [NEXT, None])
def test_the_rows_maybe_outside_hold_every_row_outside_the_window(time_type, end):
    """The fact's source-wide counts convert only `maybe_outside`'s rows: every instant whose local
    date is outside [start, end] in any timezone (offsets from -12 to +14 hours), or with no time, is
    among them; and it leaves out the rows well inside, which is what makes it cheap."""
    zones = ["Etc/GMT+12", "America/Los_Angeles", "UTC", "Asia/Seoul", "Pacific/Kiritimati"]
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"""CREATE TABLE events AS SELECT CAST(ts AS {time_type}) AS ts FROM generate_series(
            TIMESTAMP '{Q - dt.timedelta(days=3)} 00:00:00', TIMESTAMP '{NEXT + dt.timedelta(days=3)} 00:00:00',
            INTERVAL 20 MINUTE) AS instants(ts) UNION ALL SELECT NULL""")
        kept = sql.maybe_outside("events", "ts", time_type, Q, end)
        for zone in zones:
            local = sql.local_date_expr(sql.instant_expr("ts", time_type), zone)
            outside = f"ts IS NULL OR {local} < {sql.date_lit(Q)}" + (f" OR {local} > {sql.date_lit(end)}" if end else "")
            missed = conn.execute(f"SELECT count(*) FROM (SELECT ts FROM events WHERE {outside}"
                                  f" EXCEPT ALL SELECT ts FROM {kept})").fetchone()[0]
            assert missed == 0, zone
        inside = conn.execute("SELECT count(*) FROM events").fetchone()[0] - conn.execute(
            f"SELECT count(*) FROM {kept}").fetchone()[0]
        assert inside > 0 if end is None else inside >= ((NEXT - Q).days - 1) * 72


def test_duckdb_runs_the_source_text_unchanged():
    statement = sql.activation_view("fl", Grain.weekly)
    assert render(statement, "duckdb") is statement
    with duckdb.connect() as conn:  # and it is valid DuckDB (an empty FirstLast)
        conn.execute(sql.create_table("fl", tables.with_user_type(tables.FIRSTLAST.columns, "BIGINT")))
        assert conn.execute(statement).fetchall() == []



def test_a_local_spark_warehouse_is_held_by_one_process_at_a_time(tmp_path):
    """A CLI run and a UI run worker on one local Spark warehouse take turns: the second waits for
    the first process's lock, and says who holds it when it gives up."""
    import subprocess
    import sys

    pytest.importorskip("dagster_pyspark")
    from activation_assets.engines.spark import hold_warehouse_lock, lock_file
    from activation_assets.engines.base import ActivationError

    config = _parse(tmp_path, warehouse={"spark": {"master": "local[1]", "warehouse_dir": "wh"}})
    lock = lock_file(config.warehouse.spark)
    assert lock == str(tmp_path / "wh" / ".activation.lock")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire();"
        " print('held', flush=True); time.sleep(60)"), lock], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ActivationError, match=r"waited 1 s for the Spark warehouse .*wh: another process"):
            hold_warehouse_lock(lock, timeout=1)
    finally:
        holder.kill()
        holder.wait()
    hold_warehouse_lock(lock, timeout=5)  # free again: this process takes it


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"])
@pytest.mark.parametrize("time_type, bounded", [
    ("TIMESTAMP", True), ("TIMESTAMP_NS", True), ("TIMESTAMP WITH TIME ZONE", True), ("VARCHAR", False)])
def test_a_days_read_is_bounded_on_the_raw_time_column(time_type, bounded, zone):
    """Readers skip row groups and files by their statistics only for a filter on the stored column,
    widened by a day each side so that every timezone's local days are inside it (UTC+14 to UTC-11)."""
    from zoneinfo import ZoneInfo

    statement = sql.stage_select("src", "uid", "ts", [], time_type, zone, P, P)
    assert ('"ts" >= ' in statement) is bounded
    local = ZoneInfo(zone)
    edges = [dt.datetime.combine(P, t, tzinfo=local).astimezone(dt.timezone.utc).replace(tzinfo=None)
             for t in (dt.time(0, 0, 0), dt.time(23, 59, 59))]
    outside = [edges[0] - dt.timedelta(seconds=1), edges[1] + dt.timedelta(seconds=1)]
    column = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ", "VARCHAR": "VARCHAR"}.get(time_type, time_type)
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        values = ", ".join(f"('{t.isoformat(sep=' ')}')" for t in edges + outside)
        conn.execute(f"CREATE TABLE src AS SELECT 1 AS uid, CAST(x AS {column}) AS ts FROM (VALUES {values}) AS v(x)")
        assert [r[0] for r in conn.execute(f"SELECT activity_date FROM ({statement})").fetchall()] == [P, P]


def test_building_on_the_right_leaves_the_connections_settings_as_it_found_them():
    """FirstLast's step turns off DuckDB's choice of the build side for its own statements only,
    and gives a user's own disabled optimizers back, after a failure too."""
    conn = duckdb.connect()
    conn.execute("SET disabled_optimizers = 'top_n'")
    warehouse = DuckDBWarehouse(conn)
    setting = lambda: conn.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]  # noqa: E731
    with warehouse.hash_joins_build_on_the_right():
        assert set(setting().split(",")) == {"top_n", "build_side_probe_side"}
    assert setting() == "top_n"
    with pytest.raises(RuntimeError), warehouse.hash_joins_build_on_the_right():
        raise RuntimeError("a failed write")
    assert setting() == "top_n"


def test_checks_group_dense_user_ids_by_index_and_leave_the_setting_as_they_found_it():
    """Inside `grouping_dense_keys_by_index`, a month of 2M dense user ids is grouped in an array
    indexed by the id (DuckDB's perfect hash aggregate), not outside it; a user's own threshold
    comes back, after a failure too, and a higher one is kept."""
    conn = duckdb.connect()
    conn.execute("CREATE TABLE fact AS SELECT range AS user_id, DATE '2025-01-01' + CAST(range % 28 AS INTEGER)"
                 " AS period_start FROM range(1, 2000001)")
    warehouse = DuckDBWarehouse(conn)
    plan = lambda: "".join(r[1] for r in conn.execute(  # noqa: E731
        "EXPLAIN SELECT user_id, max(period_start) FROM fact GROUP BY user_id").fetchall())
    setting = lambda: int(conn.execute("SELECT current_setting('perfect_ht_threshold')").fetchone()[0])  # noqa: E731
    conn.execute("SET perfect_ht_threshold = 13")
    assert "Perfect Hash Group By" not in plan()
    with warehouse.grouping_dense_keys_by_index():
        assert "Perfect Hash Group By" in plan()
    assert setting() == 13
    with pytest.raises(RuntimeError), warehouse.grouping_dense_keys_by_index():
        raise RuntimeError("a failed check")
    assert setting() == 13
    conn.execute("SET perfect_ht_threshold = 30")
    with warehouse.grouping_dense_keys_by_index():
        assert setting() == 30
    assert setting() == 30


def test_writes_together_are_all_or_nothing_with_their_log():
    """The rolling engagement writes its three tables together (`steps._replace_together`: their
    `replace_periods` in one transaction): a failing third write leaves every table's rows and log
    entries as they were."""
    conn = duckdb.connect()
    warehouse = DuckDBWarehouse(conn)
    warehouse.ensure_partition_log()
    day, columns = dt.date(2025, 3, 1), (tables.col("period_start", "DATE", "the day"), tables.col("n", "BIGINT", "a number"))
    rows = lambda *values: " UNION ALL ".join(f"SELECT DATE '{day}' AS period_start, {v} AS n" for v in values)  # noqa: E731
    for table in ("a", "b", "c"):
        warehouse.create_table(table, columns)
    with warehouse.transaction():
        warehouse.replace_periods("a", [day], rows(1))
        warehouse.replace_periods("b", [day], rows(1, 2))
        warehouse.replace_periods("c", [day], rows(1, 2, 3))
    state = lambda: ([conn.execute(f"SELECT n FROM {t} ORDER BY n").fetchall() for t in "abc"],  # noqa: E731
                     conn.execute("SELECT * FROM _activation_partitions ORDER BY table_name").fetchall())
    before = state()
    assert [count for _, _, count, *_ in before[1]] == [1, 2, 3]
    with pytest.raises(duckdb.Error), warehouse.transaction():
        warehouse.replace_periods("a", [day], rows(10))
        warehouse.replace_periods("b", [day], rows(10, 20))
        warehouse.replace_periods("c", [day], rows("CAST('x' AS BIGINT)"))
    assert state() == before
    assert warehouse.replace_partition("a", day, rows(5, 6)) == 2  # on its own again afterwards
    assert conn.execute("SELECT row_count FROM _activation_partitions WHERE table_name = 'a'").fetchone() == (2,)


def test_duckdb_keeps_the_bit_history_uncompressed_and_spark_ddl_says_nothing_of_it():
    conn = duckdb.connect()
    columns = tables.with_user_type(tables.FIRSTLAST.columns_for(Grain.daily), "BIGINT")
    DuckDBWarehouse(conn).create_table("fl", columns)
    conn.execute("INSERT INTO fl SELECT DATE '2025-03-01', i, DATE '2025-03-01', DATE '2025-03-01', DATE '2025-03-01',"
                 " NULL, 1, i % 7 FROM range(200000) AS r(i)")
    conn.execute("CHECKPOINT")
    compressions = dict(conn.execute(
        "SELECT column_name, list(DISTINCT compression) FROM pragma_storage_info('fl')"
        " WHERE segment_type <> 'VALIDITY' GROUP BY ALL").fetchall())
    assert compressions["days_seen_bits"] == ["Uncompressed"]
    assert compressions["user_id"] != ["Uncompressed"]  # the others as DuckDB chooses
    assert "COMPRESSION" not in render(sql.create_table("fl", columns), "spark").upper()
