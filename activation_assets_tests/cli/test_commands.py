"""The command lines as a user runs them: `activation ...` and Dagster's own `dagster asset materialize`."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from .. import reference
from ..conftest import (
    ACTIVATION_COLUMNS, as_set, assert_grains_match_reference, edge_events, small_behavior, table_rows,
)

SPEC = reference.Spec("America/New_York", dt.date(2025, 3, 1), dt.date(2025, 4, 12), "monday")
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ACTIVATION_CONFIG")}
    environment.update(env)
    return subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_activation_materialize_end_to_end(tmp_path):
    rows = edge_events(SPEC, seed=21, users=list(range(1, 30)))
    config = small_behavior(tmp_path, SPEC, rows)
    first = run([str(BIN / "activation"), "materialize", "--config", str(config)], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "checks: " in first.stdout and "CHECK FAILED" not in first.stdout
    assert "Last complete period of each grain" in first.stdout
    # It says what the fact dropped: of the rows whose local date is in the window, the null ids
    # and the exact duplicates (the source's other columns derive from the row: a repeated
    # (uid, ts) is an exact duplicate).
    zone = ZoneInfo(SPEC.timezone)
    inside = [(u, t) for u, t in rows if t is not None and SPEC.start_date <= t.astimezone(zone).date() <= SPEC.end_date]
    with_id = [r for r in inside if r[0] is not None]
    assert (f"{len(inside)} source rows read on these days; dropped: {len(inside) - len(with_id)} null user id,"
            f" {len(with_id) - len(set(with_id))} duplicates") in first.stdout, first.stdout
    # The project-local instance sits next to the config, with the shipped pool limit.
    home = tmp_path / ".dagster_home"
    assert "default_limit: 1" in (home / "dagster.yaml").read_text()
    assert (home / "history").exists() or (home / "storage").exists()
    assert_grains_match_reference(tmp_path / "warehouse.duckdb", rows, SPEC)

    again = run([str(BIN / "activation"), "materialize", "--config", str(config)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Nothing to do" in again.stdout and "[1/" not in again.stdout

    # Every run is named after what it wrote: the behavior's fact job, then one per grain.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        names = sorted(r.job_name for r in instance.get_runs())
        # The latest materialization carries the columns with the warehouse's types: the user id's
        # is the source's (an Int64 column), not a placeholder.
        latest = instance.get_latest_materialization_event(dg.AssetKey("visited_activation_daily"))
        schema = latest.asset_materialization.metadata["dagster/column_schema"].value
        assert {c.name: c.type for c in schema.columns}["user_id"] == "BIGINT"
    assert names == ["visited_daily", "visited_fact", "visited_monthly", "visited_weekly"]


def test_explicit_dagster_home_wins(tmp_path):
    rows = edge_events(SPEC, seed=22, users=list(range(1, 6)))
    config = small_behavior(tmp_path, SPEC, rows)
    mine = tmp_path / "my_home"
    mine.mkdir()
    result = run([str(BIN / "activation"), "materialize", "--config", str(config), "--grain", "monthly"],
                 cwd=tmp_path, DAGSTER_HOME=str(mine))
    assert result.returncode == 0, result.stderr
    assert f"DAGSTER_HOME {mine}" in result.stdout
    assert not (tmp_path / ".dagster_home").exists()


def test_a_bad_source_is_one_message_before_dagster_starts(tmp_path):
    rows = edge_events(SPEC, seed=23, users=list(range(1, 6)))
    config = small_behavior(tmp_path, SPEC, rows, user_column="no_such_column")
    result = run([str(BIN / "activation"), "materialize", "--config", str(config)], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("has no column 'no_such_column'") == 1, result.stderr
    assert "user_column" in result.stderr and str(config) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 2, result.stderr
    # Nothing was created: no database file, no Dagster instance.
    assert not (tmp_path / "warehouse.duckdb").exists()
    assert not (tmp_path / ".dagster_home").exists()


@pytest.mark.parametrize("case", ["where typo", "not parquet", "missing file"])
def test_source_errors_name_the_config_and_say_what_is_wrong(tmp_path, case):
    rows = edge_events(SPEC, seed=25, users=list(range(1, 6)))
    config = small_behavior(tmp_path, SPEC, rows)
    text = config.read_text()
    if case == "where typo":
        config.write_text(text.replace("event_name = 'visit'", "event_nam = 'visit'"))
        words = ["behavior 'visited': its `where:` filter (event_nam = 'visit') does not run", "event_nam",
                 "Fix the filter", "uid, ts, event_name, platform"]
    elif case == "not parquet":
        (tmp_path / "events" / "notes.parquet").write_bytes(os.urandom(4096))
        words = ["behavior 'visited'", "is not a Parquet file", "notes.parquet"]
    else:
        config.write_text(text.replace("events/*.parquet", "evnets/*.parquet"))
        words = ["behavior 'visited'", "matches no file", "fix the path"]
    result = run([str(BIN / "activation"), "validate", "--config", str(config)], cwd=tmp_path)
    assert result.returncode == 1
    assert f"error: {config}" in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    # The sample-data hint belongs to the bundled config only.
    assert "sample-data" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_source_that_ended_long_ago_is_named(tmp_path):
    """Without end_date every day up to yesterday gets a partition: say that the source stopped."""
    rows = edge_events(SPEC, seed=26, users=list(range(1, 6)))
    config = small_behavior(tmp_path, SPEC, rows)
    config.write_text("\n".join(line for line in config.read_text().splitlines() if "end_date" not in line))
    last = max(t for _, t in rows if t is not None).astimezone(ZoneInfo(SPEC.timezone)).date()
    result = run([str(BIN / "activation"), "validate", "--config", str(config)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"its source's last event is on {last}" in result.stdout
    assert f"set `end_date: {last}`" in result.stdout


def test_two_commands_at_once_on_a_fresh_dagster_home(tmp_path):
    """Two behaviors from cron: Dagster creating its storage twice used to fail one of them."""
    rows = edge_events(SPEC, seed=27, users=list(range(1, 8)))
    config = small_behavior(tmp_path, SPEC, rows, grains=["monthly"])
    text = config.read_text()
    second = text[text.index("- name: visited"):].replace("name: visited", "name: opened")
    config.write_text(text + second)
    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ACTIVATION_CONFIG")}
    processes = [
        subprocess.Popen([str(BIN / "activation"), "materialize", "--config", str(config), "--behavior", name],
                         cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name in ("visited", "opened")]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    db = tmp_path / "warehouse.duckdb"
    expected = as_set(reference.activation(rows, SPEC, "monthly"), ACTIVATION_COLUMNS)
    assert as_set(table_rows(db, "visited_activation_monthly"), ACTIVATION_COLUMNS) == expected
    assert as_set(table_rows(db, "opened_activation_monthly"), ACTIVATION_COLUMNS) == expected


@pytest.mark.slow
def test_dagster_asset_materialize_partition_range(tmp_path, monkeypatch):
    rows = edge_events(SPEC, seed=24, users=list(range(1, 30)))
    config = small_behavior(tmp_path, SPEC, rows)
    home = tmp_path / "home"
    home.mkdir()
    keys = "fact_visited,visited_firstlast_daily,visited_activation_daily,visited_transitions_daily"
    result = run([str(BIN / "dagster"), "asset", "materialize", "-m", "activation_assets.definitions",
                  "--select", keys, "--partition-range", "2025-03-01...2025-03-31"],
                 cwd=tmp_path, DAGSTER_HOME=str(home), ACTIVATION_CONFIG=str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    db = tmp_path / "warehouse.duckdb"
    march = [r for r in reference.activation(rows, SPEC, "daily") if r["period_start"] <= dt.date(2025, 3, 31)]
    assert as_set(table_rows(db, "visited_activation_daily"), ACTIVATION_COLUMNS) == as_set(march, ACTIVATION_COLUMNS)
    # One run for the whole month, recorded in the instance, every partition materialized.
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    assert len(instance.get_runs()) == 1
    assert len(instance.get_materialized_partitions(dg.AssetKey("visited_activation_daily"))) == 31


def test_activation_check_passes_then_names_a_violation(tmp_path, capsys):
    from activation_assets import cli

    from ..conftest import run_graph

    rows = edge_events(SPEC, seed=28, users=list(range(1, 20)))
    config = small_behavior(tmp_path, SPEC, rows, grains=["weekly"])
    assert run_graph(config) == 0
    capsys.readouterr()
    assert cli.main(["check", "--config", str(config)]) == 0
    clean = capsys.readouterr().out
    assert "PASS visited_activation_weekly.matches_days" in clean and "0 failed" in clean

    import duckdb

    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:  # a user counted as active in 2030
        conn.execute("UPDATE visited_firstlast_weekly SET last_active_period = DATE '2030-01-06'"
                     " WHERE period_start = DATE '2025-03-17'"
                     " AND user_id = (SELECT min(user_id) FROM visited_firstlast_weekly"
                     "                WHERE period_start = DATE '2025-03-17')")
    assert cli.main(["check", "--config", str(config), "--from", "2025-03-10", "--to", "2025-03-24"]) == 1
    out = capsys.readouterr().out
    assert "FAIL visited_firstlast_weekly.periods_in_order: failed on 1 of 3 partition(s)" in out
    assert "failing partitions: 2025-03-17" in out
    assert "examples: period_start | user_id | first_active_period" in out and "| 2030-01-06 |" in out
    assert "PASS visited_firstlast_weekly.one_row_per_user" in out
    assert "13 passed, 2 failed." in out  # and the activation view read off it


def test_the_sample_data_has_the_noise_it_promises(tmp_path):
    """Exact duplicates (a re-delivered event keeps its id), null ids and times, rows outside the year."""
    import duckdb

    from activation_assets.sample_data import SampleSpec, generate

    generate(tmp_path, SampleSpec(users=400, days=60, seed=5))
    events = f"read_parquet('{tmp_path}/events/*.parquet')"
    with duckdb.connect() as conn:
        total, distinct, null_ids, null_times, outside = conn.execute(f"""
            SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT * FROM {events})),
                   count(*) FILTER (WHERE user_id IS NULL), count(*) FILTER (WHERE occurred_at IS NULL),
                   count(*) FILTER (WHERE year(occurred_at) <> 2025)
            FROM {events}""").fetchone()
        posts, distinct_posts = conn.execute(
            f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT * FROM read_csv('{tmp_path}/community_posts.csv')))"
            f" FROM read_csv('{tmp_path}/community_posts.csv')").fetchone()
    assert total > distinct, "exact duplicates"
    assert null_ids > 0 and null_times > 0 and outside > 0
    assert posts > distinct_posts


def test_a_database_held_by_another_process_is_one_sentence_from_every_command(tmp_path):
    """A notebook (here: this test process) holds the DuckDB file: each command says which file,
    which process DuckDB names, and what to do; exit 1; no traceback. A run's step says the same."""
    import duckdb

    from ..conftest import run_graph

    rows = edge_events(SPEC, seed=29, users=list(range(1, 8)))
    config = small_behavior(tmp_path, SPEC, rows, grains=["monthly"])
    assert run_graph(config) == 0
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)):
        for command in (["materialize"], ["status"], ["check"], ["report"], ["validate"]):
            result = run([str(BIN / "activation"), *command, "--config", str(config)], cwd=tmp_path)
            said = result.stdout + result.stderr
            assert result.returncode == 1, (command, said)
            assert "Traceback" not in said, (command, said)
            assert f"the DuckDB database {database} is open in another process" in said, (command, said)
            assert f"PID {os.getpid()}" in said and "Close it there" in said, (command, said)


def test_a_step_that_meets_a_held_database_fails_with_the_sentence(tmp_path, monkeypatch):
    """The step's connection (the bound resource, Dagster's DuckDBResource, its retries cut short
    here) fails the step with the same sentence as a `dagster.Failure`, not DuckDB's stack."""
    import contextlib

    import dagster as dg
    import duckdb
    from dagster_duckdb import DuckDBResource

    from activation_assets.orchestration import resources

    @contextlib.contextmanager
    def no_retries(self):
        with duckdb.connect(self.database) as conn:
            yield conn

    monkeypatch.setattr(DuckDBResource, "get_connection", no_retries)
    database = str(tmp_path / "held.duckdb")
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]);"
                               " print('open', flush=True); sys.stdin.read()", database],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        bound = {resources.RESOURCE: resources.RunDuckDBResource(database=database)}
        with dg.build_asset_context(resources=bound) as context:
            with pytest.raises(dg.Failure) as failure, resources.warehouse_of(context):
                pass
    finally:
        holder.communicate("", timeout=30)
    assert failure.value.description.startswith(f"the DuckDB database {database} is open in another process (")
    assert f"PID {holder.pid}" in failure.value.description


def test_a_run_opens_the_database_once_and_each_step_starts_clean(tmp_path):
    """The warehouse resource keeps one connection for the run: a step that failed mid-write leaves
    the next one neither its open transaction nor its staged tables, what a step wrote is
    checkpointed when it ends, and the run's end releases the database's lock."""
    from activation_assets.engines.base import ActivationError
    from activation_assets.engines.duckdb import database_lock
    from activation_assets.orchestration import resources

    resource = resources.RunDuckDBResource(database=str(tmp_path / "run.duckdb"))
    with pytest.raises(RuntimeError), resources.connect(resource) as first:
        first.conn.execute("CREATE TABLE kept (x INTEGER)")
        first.stage("staged", "SELECT 1 AS x")
        first.conn.execute("BEGIN")
        first.conn.execute("INSERT INTO kept VALUES (1)")
        raise RuntimeError("the step failed mid-write")
    with resources.connect(resource) as second:
        assert second is first
        assert second.conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 0
        assert second.conn.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0] == 0
        second.conn.execute("INSERT INTO kept SELECT range FROM range(100000)")
        assert (tmp_path / "run.duckdb.wal").stat().st_size > 0
    # what the step wrote is checkpointed when it ends, not held (in memory) until the run's end
    assert not (tmp_path / "run.duckdb.wal").exists() or (tmp_path / "run.duckdb.wal").stat().st_size == 0
    with pytest.raises(ActivationError), database_lock(resource.database, timeout=0.2):
        pass  # held by the run ...
    resource.teardown_after_execution(None)
    with database_lock(resource.database, timeout=0.2):
        pass  # ... until it ends


def test_a_dagster_run_connects_once_for_all_its_steps(tmp_path, monkeypatch):
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from ..conftest import materialize

    opened = []
    get_connection = DuckDBResource.get_connection

    def counted(self):
        opened.append(self.database)
        return get_connection(self)

    monkeypatch.setattr(DuckDBResource, "get_connection", counted)
    spec = reference.Spec("UTC", dt.date(2025, 3, 1), dt.date(2025, 3, 10), "monday")
    config = small_behavior(tmp_path, spec, edge_events(spec, seed=5, users=list(range(1, 9))))
    instance = dg.DagsterInstance.ephemeral()
    keys = ["visited_firstlast_daily", "visited_activation_daily", "visited_transitions_daily", "visited_growth_daily"]
    assert materialize(config, ["fact_visited"], "2025-03-01", "2025-03-10", instance).success
    opened.clear()
    result = materialize(config, keys, "2025-03-01", "2025-03-10", instance)
    assert result.success and len(result.get_asset_materialization_events()) == 4 * 10
    assert len(opened) == 1


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_validate_reads_the_whole_time_column_and_names_the_lines_that_do_not_parse(tmp_path, kind):
    """One bad value among good ones, far down the file (not in a sample): validate says how many,
    quotes it with its file and line (row, for Parquet), exit 1; materialize then says it once, as
    its own sentence, without Dagster's frames."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    from ..conftest import write_config

    good = [(u % 40, f"2025-03-{1 + u % 28:02d} 1{u % 10}:00:00") for u in range(30_000)]
    good[25_000] = (7, "2025-03-3l 10:00:00")  # a typed l for a 1
    good[26_000] = (8, "yesterday")
    table = pa.table({"uid": [u for u, _ in good], "ts": [t for _, t in good], "event_name": ["visit"] * len(good)})
    (tmp_path / "events").mkdir()
    if kind == "csv":
        pyarrow.csv.write_csv(table, tmp_path / "events" / "part-1.csv")
    else:
        pyarrow.parquet.write_table(table, tmp_path / "events" / "part-1.parquet", row_group_size=5_000)
    config = write_config(tmp_path, [{
        "name": "visited", "source": {kind: f"events/*.{kind}"}, "user_column": "uid", "time_column": "ts",
        "start_date": dt.date(2025, 3, 1), "end_date": dt.date(2025, 3, 31), "timezone": "UTC", "grains": ["monthly"]}])
    where = "line" if kind == "csv" else "row"
    result = run([str(BIN / "activation"), "validate", "--config", str(config)], cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 value(s) of time column 'ts'" in result.stderr, result.stderr
    # The CSV's line counts the header; the Parquet row does not.
    assert f"'2025-03-3l 10:00:00' ({tmp_path / 'events' / f'part-1.{kind}'}, {where} {25_002 if kind == 'csv' else 25_001})" \
        in result.stderr, result.stderr
    assert f"'yesterday' (" in result.stderr and "Traceback" not in result.stderr

    result = run([str(BIN / "activation"), "materialize", "--config", str(config)], cwd=tmp_path)
    assert result.returncode == 1
    said = result.stdout + result.stderr
    assert said.count("fact_visited failed: behavior 'visited'") == 1, said
    assert ("CSV Error on Line: 25002" if kind == "csv" else "do not parse as timestamps") in said, said
    assert "Traceback" not in said and 'File "' not in said and "dagster._core" not in said, said


def test_a_home_from_the_earlier_template_is_upgraded_keeping_its_settings(tmp_path, monkeypatch):
    """Homes copied from the template of 3f55b51..d8d4284 named the pooled event log through
    DAGSTER_HOME, a config the log no longer takes; the block becomes the template's instance class."""
    import types

    import dagster as dg
    import yaml

    from activation_assets.cli import runner
    from activation_assets.orchestration.event_log import PooledSqliteEventLogStorage

    home = tmp_path / ".dagster_home"
    home.mkdir()
    earlier = {"run_monitoring": {"enabled": False},
               "event_log_storage": {"module": "activation_assets.orchestration.event_log",
                                     "class": "PooledSqliteEventLogStorage",
                                     "config": {"dagster_home": {"env": "DAGSTER_HOME"}}}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(earlier))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    runner.ensure_dagster_home(types.SimpleNamespace(engine="duckdb", base_dir=tmp_path))
    settings = yaml.safe_load((home / "dagster.yaml").read_text())
    assert settings["run_monitoring"] == {"enabled": False} and "event_log_storage" not in settings
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert instance.event_log_storage._base_dir == str(home / "history" / "runs")  # noqa: SLF001
