"""The project's SQLite event log (orchestration/event_log.py): Dagster's files and tables, its
connections kept between writes."""

import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy
import yaml
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster_shared.serdes import deserialize_value

from activation_assets.orchestration.event_log import OPEN_RUN_DATABASES, PooledSqliteEventLogStorage

SHIPPED = Path(__file__).resolve().parents[2] / "activation_assets" / "instance" / "dagster.yaml"
DAYS = dg.DailyPartitionsDefinition(start_date="2025-03-01", end_date="2025-03-11")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec("holds", asset="counted")])
def counted(context: dg.AssetExecutionContext):
    for key in context.partition_keys:
        context.add_asset_metadata({"rows": int(key[-2:])}, partition_key=key)
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(passed=True)


@dg.asset
def plain() -> None:
    return None


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    shutil.copy(SHIPPED, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def dagsters_own(home: Path) -> dg.DagsterInstance:
    """An instance of the shipped settings on Dagster's own SQLite event log."""
    home.mkdir(parents=True, exist_ok=True)
    settings = yaml.safe_load(SHIPPED.read_text())
    del settings["instance_class"]
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.event_log_storage) is SqliteEventLogStorage
    return instance


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The SQLite files of the event log that connections were opened to, one entry per open."""
    files: list[str] = []

    def on_connect(dbapi_connection, _record):
        path = dbapi_connection.execute("PRAGMA database_list").fetchone()[2]
        if "/history/runs/" in path:
            files.append(path)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", on_connect)
    yield files
    sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", on_connect)


def _range_run(instance) -> dg.ExecuteInProcessResult:
    result = dg.materialize([counted], instance=instance, tags={"dagster/asset_partition_range_start": "2025-03-01",
                                                               "dagster/asset_partition_range_end": "2025-03-10"})
    assert result.success
    return result


def _materialized(storage) -> set[str]:
    return set(storage.get_materialized_partitions(counted.key))


def test_the_shipped_instance_keeps_the_event_logs_connections_between_writes(home, opened):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert dg.materialize([plain], instance=instance).success  # the index's connections, opened once
        opened.clear()
        result = _range_run(instance)
    events = len(result.all_events)
    assert events >= 20 and len(result.get_asset_materialization_events()) == 10
    # the run's own file (created, then pooled), the index's kept: not one per statement
    assert len(opened) <= 3, f"{len(opened)} connections opened for {events} events"


def test_dagsters_own_storage_opens_a_connection_per_statement(home, opened):
    """What the storage above saves: the same run on Dagster's storage (so the test above means it)."""
    with dagsters_own(home / "plain") as instance:
        opened.clear()
        result = _range_run(instance)
    assert len(opened) > len(result.get_asset_materialization_events()) * 2


def test_the_events_are_where_and_as_dagster_keeps_them(home):
    with dg.DagsterInstance.get() as instance:
        _range_run(instance)
    days = {f"2025-03-{d:02d}" for d in range(1, 11)}
    assert _materialized(SqliteEventLogStorage(str(home / "history" / "runs"))) == days
    # and an instance written by Dagster's own storage is read by this one
    before = home / "before"
    with dagsters_own(before) as instance:
        _range_run(instance)
    assert _materialized(PooledSqliteEventLogStorage(str(before / "history" / "runs"))) == days


def test_an_instance_loaded_from_its_folder_keeps_its_events_there(home, tmp_path, monkeypatch):
    """Whatever DAGSTER_HOME says: a script's `from_config(folder)` reads and writes that folder's."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(home, elsewhere, ignore=shutil.ignore_patterns("history", "elsewhere"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(elsewhere)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        _range_run(instance)
    assert _materialized(SqliteEventLogStorage(str(elsewhere / "history" / "runs"))) == {
        f"2025-03-{d:02d}" for d in range(1, 11)}
    with dg.DagsterInstance.get() as instance:  # the home DAGSTER_HOME names saw none of it
        assert not instance.get_materialized_partitions(counted.key)


def _rows(home: Path) -> dict[str, list[tuple]]:
    """What the event log holds, without ids, timestamps and run ids."""
    runs = home / "history" / "runs"
    shard = next(p for p in runs.glob("*.db") if p.name != "index.db")
    with sqlite3.connect(runs / "index.db") as index, sqlite3.connect(shard) as run:
        return {
            "run's events": sorted(run.execute("SELECT dagster_event_type, asset_key, partition, step_key"
                                               " FROM event_logs").fetchall(), key=str),
            "index's events": sorted(index.execute("SELECT dagster_event_type, asset_key, partition, step_key"
                                                   " FROM event_logs").fetchall(), key=str),
            # a data version is derived from the run's id: the tag is compared, not its value
            "asset tags": sorted(index.execute("SELECT asset_key, key, CASE WHEN key = 'dagster/data_version'"
                                               " THEN 'a version' ELSE value END FROM asset_event_tags").fetchall()),
            "asset entries": [(key, deserialize_value(last).event_log_entry.dagster_event.partition)
                              for key, last in index.execute("SELECT asset_key, last_materialization FROM asset_keys")],
            "check rows": sorted(index.execute("SELECT asset_key, check_name, partition, execution_status"
                                               " FROM asset_check_executions").fetchall(), key=str),
        }


def test_a_batch_of_events_is_stored_as_dagster_stores_each(home, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "100")  # as `activation materialize` sets it
    with dg.DagsterInstance.get() as instance:
        _range_run(instance)
    with dagsters_own(home / "own") as instance:
        _range_run(instance)
    ours, theirs = _rows(home), _rows(home / "own")
    assert len(ours["asset tags"]) >= 10 and len(ours["check rows"]) >= 10
    assert ours == theirs


def _run_database(home: Path) -> dict:
    """A run's SQLite file as Dagster reads it: its schema, journal and migration revision."""
    runs = home / "history" / "runs"
    shard = next(p for p in runs.glob("*.db") if p.name != "index.db")
    with sqlite3.connect(shard) as run:
        return {"schema": sorted(run.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str),
                "journal": run.execute("PRAGMA journal_mode").fetchone()[0],
                "revision": run.execute("SELECT version_num FROM alembic_version").fetchall()}


def test_a_runs_database_is_made_as_dagster_makes_it(home):
    """Made through one revision map per process (`_init_run_database`), not two per run."""
    from alembic.script import ScriptDirectory
    from dagster._core.storage.event_log.sqlite import sqlite_event_log
    from dagster._core.storage.sql import get_alembic_config

    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([plain], instance=instance).success
    with dagsters_own(home / "own") as instance:
        assert dg.materialize([plain], instance=instance).success
    ours, theirs = _run_database(home), _run_database(home / "own")
    head = ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__)).get_current_head()
    assert ours == theirs and ours["journal"] == "wal" and ours["revision"] == [(head,)]


def test_a_long_lived_process_keeps_few_run_files_open(home):
    with dg.DagsterInstance.get() as instance:
        for _ in range(OPEN_RUN_DATABASES + 4):
            assert dg.materialize([plain], instance=instance).success
        storage = instance.event_log_storage
        runs = [shard for shard in storage._engines if shard != "index"]  # noqa: SLF001
        assert len(runs) == OPEN_RUN_DATABASES
        assert len(storage.get_event_records(dg.EventRecordsFilter(dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                                   asset_key=plain.key))) == OPEN_RUN_DATABASES + 4


def test_a_wiped_instance_writes_to_its_new_files(home):
    with dg.DagsterInstance.get() as instance:
        run = dg.materialize([plain], instance=instance).dagster_run
        instance.wipe()  # deletes the run's file of events
        instance.report_engine_event("after the wipe", run)
    # read from the files by a storage of its own: the event did not go to the deleted file
    logs = PooledSqliteEventLogStorage(str(home / "history" / "runs")).get_logs_for_run(run.run_id)
    assert [log.message for log in logs] == ["after the wipe"]
