"""Dagster's SQLite event log with its connections kept between writes.

Dagster's `SqliteEventLogStorage` builds a SQLAlchemy engine for every statement it runs, and closes
its connection after: each event of a run pays an engine, an open and a close of the SQLite file (the
last close of a WAL database checkpoints it), and a fresh compilation of its INSERT, since compiled
statements are cached per engine. At 500,000 users a backfill's asset partitions cost 15-17 ms of
such bookkeeping each; with the engines kept, 5-6 ms (docs/performance.md). This storage keeps one
engine per database file: the index and the few runs last written or read, so a long-lived webserver
holds a handful of files open, not one per run it ever showed. The files, tables and the rest of
the storage's behaviour are Dagster's own.

The project's dagster.yaml names `ActivationInstance`: Dagster's instance, whose default storage
(used when the file configures none) is Dagster's SQLite storage with this event log in it. Dagster
hands an instance class's defaults the folder the instance is loaded from, so the events stay where
Dagster keeps them (`<folder>/history/runs`, an existing instance keeps its history) whichever way the
instance is loaded, and a `storage:` block (Postgres) replaces them as it replaces Dagster's own.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import yaml
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster._core.events import DagsterEventType
from dagster._core.instance import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME
from dagster._core.storage.sql import get_alembic_config
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster_shared.serdes import serialize_value
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.engine import Connection, Engine

_BATCHED = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION}

# Run databases kept open besides the index: a run writes its own, the UI reads a few at a time.
OPEN_RUN_DATABASES = 8


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` that keeps one engine, with its pooled connections, per database file."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._tables_seen: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        if self._engines_pid != os.getpid():  # a forked child: the parent's connections are not its own
            self._engines, self._engines_pid = OrderedDict(), os.getpid()
        engine = self._engines.get(shard)
        if engine is None:
            engine = create_engine(self.conn_string_for_shard(shard),
                                   connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
            self._engines[shard] = engine
            runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
            for name in runs[:-OPEN_RUN_DATABASES]:
                self._engines.pop(name).dispose()
        else:
            self._engines.move_to_end(shard)
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:  # Dagster's: one statement of this storage at a time in a process
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                if shard == INDEX_SHARD_NAME or not self._init_run_database(engine):
                    self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def _init_run_database(self, engine: Engine) -> bool:
        """A run's database as Dagster's `_initdb` makes it (its tables, WAL, stamped at the head
        revision), read and stamped through one revision map per process, where Dagster's builds two
        per run by executing every migration script (0.1 s of each run). False where Dagster's own
        should do it: a database another process is creating, or anything unexpected."""
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection)
                if context.get_current_revision() is None:
                    SqlEventLogStorageMetadata.create_all(connection)
                    connection.execute(text("PRAGMA journal_mode=WAL;"))
                    context.stamp(_migrations(), "head")
                    connection.commit()
            return True
        except (DBAPIError, sqlite3.Error):
            return False

    def store_event_batch(self, events) -> None:
        """A step's materializations (or observations) in two transactions, its run's file and the
        index, where Dagster's SQLite storage stores each event alone (as Postgres's does not): the
        same rows, and each asset's entry updated with its last event (what one at a time leaves)."""
        if (not events or len({e.run_id for e in events}) != 1
                or any(e.dagster_event_type not in _BATCHED for e in events)):
            return super().store_event_batch(events)
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(self.prepare_insert_event_batch(events))
        with self.index_transaction() as conn:
            ids = []
            for event in events:
                with db_result(conn, self.prepare_insert_event(event)) as result:
                    ids.append(result.inserted_primary_key[0])
            self._store_asset_event_tags(conn, events, ids)
            last = {event.dagster_event.asset_key: (event, id_) for event, id_ in zip(events, ids)}
            for event, id_ in last.values():
                self._store_asset_event(conn, event, id_)

    def _store_asset_check_evaluation_planned(self, event, event_id) -> None:
        # Dagster's rows (one per partition of a range run), the event serialized once for all of
        # them instead of once per row, in one statement executed per row rather than a statement
        # of that many rows compiled anew: 21 checks x 112 days cost a second of a backfill.
        planned = event.dagster_event.event_specific_data
        partition_keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        common = dict(
            asset_key=planned.asset_key.to_string(), check_name=planned.check_name, run_id=event.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value, evaluation_event=serialize_value(event),
            evaluation_event_timestamp=self._event_insert_timestamp(event), evaluation_event_storage_id=event_id)
        with self.index_connection() as conn:  # executemany: one compiled statement, whatever the rows
            conn.execute(AssetCheckExecutionsTable.insert(),
                         [dict(common, partition=partition_key) for partition_key in partition_keys])

    def has_table(self, table_name: str) -> bool:
        # Asked on every asset event (Dagster's storage opens the index to answer); a table once
        # there stays (a wipe deletes rows, not tables), so only its presence is remembered.
        if table_name not in self._tables_seen and super().has_table(table_name):
            self._tables_seen.add(table_name)
        return table_name in self._tables_seen

    def _dispose_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._dispose_engines()  # its files are deleted: no connection may outlive them
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, events, schedules under one folder) with the pooled event log."""

    def __init__(self, base_dir: str, inst_data=None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData:
        return _configured(PooledSqliteEventLogStorage, _event_logs_directory(self.base_dir))


class ActivationInstance(DagsterInstance):
    """Dagster's instance; where its dagster.yaml configures no storage, the pooled SQLite storage in
    the instance's own folder instead of Dagster's SQLite storage there."""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str):
        return {**InstanceRef.config_defaults(base_dir),
                "storage": _configured(PooledSqliteStorage, base_dir),
                "event_log_storage": _configured(PooledSqliteEventLogStorage, _event_logs_directory(base_dir))}


@functools.cache
def _migrations() -> ScriptDirectory:
    """Dagster's event log migrations, read once per process (their revision map is kept on it)."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


def _configured(cls: type, base_dir: str) -> ConfigurableClassData:
    return ConfigurableClassData(cls.__module__, cls.__name__, yaml.dump({"base_dir": base_dir}))
