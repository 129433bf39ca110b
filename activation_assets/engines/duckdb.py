"""DuckDB, the embedded default engine: a `Warehouse` over one database file.

DuckDB lets one process open a database file at a time, and a second one fails at once. Dagster's
concurrency pool (shipped in the project-local instance config) serialises runs of one instance;
the file lock here also serialises everything else — a `DAGSTER_HOME` without that config, the
CLI next to the UI, tests — by waiting instead of failing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
import re
from contextlib import contextmanager
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from activation_assets import tables
from activation_assets.config import ActivationConfig, BehaviorConfig, SourceConfig
from activation_assets.engines.base import LOCK_TIMEOUT_SECONDS, ActivationError, Warehouse
from activation_assets.models import sql
from activation_assets.models.sql import PARTITION_LOG, date_lit, ident, literal


def lock_path(database: str) -> str | None:
    return None if database == ":memory:" else f"{database}.lock"


@contextmanager
def database_lock(database: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    path = lock_path(database)
    if path is None:
        yield
        return
    try:
        with FileLock(path, timeout=timeout):
            yield
    except Timeout:
        raise ActivationError(
            f"waited {timeout:.0f} s for the DuckDB database {database}: another process of this project"
            f" holds its lock ({path}). Wait for that run to finish, or stop it."
        ) from None


# Key ranges up to 2^22 (4M user ids) are grouped in an array of that many slots: a slot holds the key
# and a check's few aggregate states (tens of bytes), so at most a few hundred MB per thread.
DENSE_KEY_BITS = 22

_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def held_elsewhere(database: str, error: duckdb.Error) -> ActivationError | None:
    """DuckDB's lock error as one sentence (None for any other error): the file is open in a
    process outside this project (a notebook, a `duckdb` shell), which DuckDB names."""
    text = str(error)
    if "Could not set lock on file" not in text:
        return None
    holder = _HOLDER.search(text)
    who = f" ({holder['program']}, PID {holder['pid']}, as DuckDB says)" if holder else ""
    return ActivationError(
        f"the DuckDB database {database} is open in another process{who}; DuckDB opens a database file"
        " in one process at a time. Close it there (a notebook's connection, a `duckdb` shell) and run"
        " this again.")


@contextmanager
def opened(database: str) -> Iterator[None]:
    """Turns DuckDB's lock error while opening `database` into its sentence."""
    try:
        yield
    except duckdb.IOException as exc:
        held = held_elsewhere(database, exc)
        if held is None:
            raise
        raise held from None


@contextmanager
def session(conn: duckdb.DuckDBPyConnection) -> Iterator[DuckDBWarehouse]:
    """A connection opened under the lock (by Dagster's DuckDBResource, say) as the layer's warehouse:
    the session time zone pinned to UTC (a timestamp without a zone means UTC, as the contract says),
    the records created; the connection closed afterwards, also when a step failed (DuckDBResource
    closes it only when the block succeeds, and a failed step would keep the file locked)."""
    try:
        conn.execute("SET TimeZone = 'UTC'")
        warehouse = DuckDBWarehouse(conn)
        warehouse.ensure_partition_log()
        yield warehouse
    finally:
        conn.close()


@contextmanager
def connect_database(
    database: str, read_only: bool = False, memory_limit: str | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection outside Dagster (the CLI's planning, validation and summary), under the lock."""
    config = {"memory_limit": memory_limit} if memory_limit else {}
    with database_lock(database):
        with opened(database):
            conn = duckdb.connect(database, read_only=read_only, config=config)
        with conn:
            conn.execute("SET TimeZone = 'UTC'")
            yield conn


@contextmanager
def open_warehouse(config: ActivationConfig, read_only: bool = False) -> Iterator[DuckDBWarehouse | None]:
    """The configured database outside Dagster. Yields None for a database that does not exist
    yet when only reading."""
    if read_only and config.database != ":memory:" and not Path(config.database).exists():
        yield None
        return
    with connect_database(config.database, read_only=read_only, memory_limit=config.memory_limit) as conn:
        warehouse = DuckDBWarehouse(conn)
        if not read_only:
            warehouse.ensure_partition_log()
        yield warehouse


@contextmanager
def open_for_reading(config: ActivationConfig) -> Iterator[DuckDBWarehouse]:
    """A warehouse to inspect sources with that creates nothing: the database file read-only when it
    exists (a `table:` source lives there), an in-memory DuckDB when it does not (files are read
    all the same)."""
    if config.database == ":memory:" or Path(config.database).exists():
        with open_warehouse(config, read_only=True) as warehouse:
            yield warehouse
        return
    with duckdb.connect(":memory:") as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield DuckDBWarehouse(conn)


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All or nothing: a failure (or a killed process) leaves the previous contents in place."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def source_relation(source: SourceConfig, files: list[str] | None = None, as_text: str | None = None) -> str:
    """The configured source as a DuckDB relation, with its `where:` filter applied; `files`, when
    given, are the only files of the source's glob to read (the ones a run's days can be in). With
    `as_text`, a CSV's column of that name is read as it is written, whatever type its sniffed rows
    suggest (a bad value past the sniffer's sample would otherwise stop the read)."""
    location = "[" + ", ".join(literal(f) for f in files) + "]" if files else literal(source.location)
    if source.kind == "parquet":
        relation = f"read_parquet({location}, union_by_name = true)"
    elif source.kind == "csv":
        types = f", types = {{{literal(as_text)}: 'VARCHAR'}}" if as_text else ""
        relation = f"read_csv({location}, union_by_name = true{types})"
    else:
        relation = sql.table_name(source.location)
    return sql.filtered(relation, source.where)


class DuckDBWarehouse(Warehouse):
    """Each partition is replaced inside one transaction: delete its window, insert, log it.

    Inserts match columns by name, never by position: a source re-exported with its columns in
    another order (or a glob whose first file changed) must not move values into other columns.
    """

    engine = "duckdb"
    # The fact step of 112 days of 500,000 users' events peaked at 0.74-0.80 GB staged at once,
    # 0.41 GB four weeks at a time (0.27 GB two weeks at a time, slower: each chunk is a
    # transaction and a scan of its days).
    staged_days = 28
    errors = (duckdb.Error,)

    def __init__(self, conn: duckdb.DuckDBPyConnection):
        self.conn = conn

    def query(self, statement: str) -> list[tuple]:
        return self.conn.execute(statement).fetchall()

    def query_named(self, statement: str) -> tuple[list[str], list[tuple]]:
        cursor = self.conn.execute(statement)
        return [d[0] for d in cursor.description], cursor.fetchall()

    def table_exists(self, table: str) -> bool:
        """A table or a view of that name."""
        try:
            self.conn.table(table)  # binding the name: 0.4 ms, against 1.9 ms for the catalog functions
            return True
        except duckdb.Error:  # no such relation, or a view that no longer binds: ask the catalog
            pass
        return bool(self.conn.execute(
            "SELECT (SELECT count(*) FROM duckdb_tables() WHERE table_name = $1)"
            " + (SELECT count(*) FROM duckdb_views() WHERE view_name = $1 AND NOT internal)", [table]).fetchone()[0])

    def column_types(self, relation: str) -> dict[str, str]:
        return {row[0]: row[1] for row in self.conn.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}

    def source_relation(self, behavior: BehaviorConfig, files: list[str] | None = None) -> str:
        return source_relation(behavior.source, files)

    def source_with_time_as_written(self, behavior: BehaviorConfig) -> str | None:
        if behavior.source.kind != "csv":
            return None
        return source_relation(behavior.source, as_text=behavior.time_column)

    def locate_values(self, behavior: BehaviorConfig, column: str, values: Sequence[str]) -> dict[str, str]:
        try:
            return self._locate_values(behavior.source, column, values)
        except duckdb.Error:  # only says where; the values were found all the same
            return {}

    def _locate_values(self, source: SourceConfig, column: str, values: Sequence[str]) -> dict[str, str]:
        if source.kind not in ("csv", "parquet") or not values:
            return {}
        wanted = "[" + ", ".join(literal(v) for v in values) + "]"
        if source.kind == "parquet":
            rows = self.query(f"""
                SELECT CAST({ident(column)} AS VARCHAR), min_by(filename, (filename, file_row_number)),
                       min(file_row_number) + 1
                FROM read_parquet({literal(source.location)}, union_by_name = true, filename = true,
                                  file_row_number = true)
                WHERE list_contains({wanted}, CAST({ident(column)} AS VARCHAR)) GROUP BY 1""")
            return {value: f"{file}, row {row}" for value, file, row in rows}
        # CSV has no row number, but its reader records the lines it cannot cast, with their number.
        self.query(f"""
            SELECT count({ident(column)}) FROM read_csv({literal(source.location)}, filename = true,
                types = {{{literal(column)}: 'TIMESTAMPTZ'}}, store_rejects = true)""")
        lines = self.query("""
            SELECT s.file_path, e.line, e.csv_line FROM reject_errors AS e JOIN reject_scans AS s
            USING (scan_id, file_id) ORDER BY s.file_path, e.line""")
        found: dict[str, str] = {}
        for file, line, text in lines:
            for value in values:
                if value not in found and value in text:
                    found[value] = f"{file}, line {line}"
        return found

    def create_table(self, table: str, columns: Sequence[tables.Column]) -> None:
        self.conn.execute(sql.create_table(table, columns, duckdb_storage=True))

    def is_view(self, name: str) -> bool:
        return bool(self.conn.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal", [name]).fetchone()[0])

    def create_view(self, name: str, select: str) -> None:
        if self.table_exists(name) and not self.is_view(name):
            self.conn.execute(f"DROP TABLE {ident(name)}")  # written as a table by an earlier version
        self.conn.execute(f"CREATE OR REPLACE VIEW {ident(name)} AS {select}")

    def stage(self, name: str, select: str) -> None:
        self.conn.execute(f"CREATE OR REPLACE TEMP TABLE {ident(name)} AS {select}")

    def end_step(self) -> None:
        """What a step leaves on a connection the next step reuses: an open transaction (a failed
        step's) is rolled back, its staged tables are dropped (their memory too), and what it wrote
        is checkpointed (as closing the connection after each step did: left to the run's end, the
        checkpoint of all its steps' writes at once was the run's peak of memory)."""
        try:
            self.conn.execute("ROLLBACK")
        except duckdb.TransactionException:  # none open: the step committed or never began one
            pass
        staged = self.conn.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
        for (name,) in staged:
            self.conn.execute(f"DROP TABLE temp.main.{ident(name)}")
        self.checkpoint()

    def checkpoint(self) -> None:
        self.conn.execute("CHECKPOINT")

    def drop_stage(self, name: str) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {ident(name)}")

    def stage_rows(self, name: str, columns: Sequence[tables.Column], rows: Sequence[tuple]) -> None:
        import pyarrow as pa

        # An Arrow table: 270 rows of 14 columns as VALUES cost DuckDB 65 ms to bind, as Arrow 2 ms.
        types = {"DATE": pa.date32(), "VARCHAR": pa.string(), "INTEGER": pa.int32(), "BIGINT": pa.int64(),
                 "DOUBLE": pa.float64()}
        data = pa.table({c.name: pa.array([row[i] for row in rows], type=types[c.type])
                         for i, c in enumerate(columns)})
        self.conn.register("_activation_rows", data)
        try:
            self.conn.execute(f"CREATE OR REPLACE TEMP TABLE {ident(name)} AS SELECT * FROM _activation_rows")
        finally:
            self.conn.unregister("_activation_rows")

    def drop_table(self, table: str) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {ident(table)}")

    def create_table_like(self, table: str, stage: str, not_null: Sequence[str] = ()) -> None:
        if self.table_exists(table):
            return
        self.create_table(table, [tables.col(name, kind, "", nullable=name not in not_null)
                                  for name, kind in self.table_column_types(stage).items()])

    def replace_periods(
        self, table: str, periods: Sequence[dt.date], select: str,
        fingerprints: dict[dt.date, tuple[int, int]] | None = None,
    ) -> dict[dt.date, int]:
        first, last = min(periods), max(periods)
        self.conn.execute(f"DELETE FROM {ident(table)} WHERE {sql.in_periods(periods)}")
        self.conn.execute(f"INSERT INTO {ident(table)} BY NAME {select}")
        written = dict(self.conn.execute(sql.rows_per_period(table, first, last)).fetchall())
        rows = {period: written.get(period, 0) for period in periods}
        self.record_partitions(table, rows, fingerprints)
        return rows

    def replace_partition(self, table: str, period: dt.date, select: str) -> int:
        with self.transaction():
            self.conn.execute(sql.delete_range(table, period, period))
            # The insert's own count: every row of `select` is in the partition (its contract).
            rows = self.conn.execute(f"INSERT INTO {ident(table)} BY NAME {select}").fetchone()[0]
            self.record_partitions(table, {period: rows})
        return rows

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: a failure (or a killed process) leaves the previous contents in place."""
        with transaction(self.conn):
            yield

    @contextmanager
    def hash_joins_build_on_the_right(self) -> Iterator[None]:
        # DuckDB otherwise picks the build side from its cardinality estimates, which put FirstLast(q)
        # (every user seen so far, with all its columns) in the hash table rather than the period's
        # active users: a daily FirstLast of 2M users took 0.62 s instead of 0.52 s (day 180 of the benchmark).
        previous = self.conn.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]
        disabled = ",".join(filter(None, (previous, "build_side_probe_side")))
        self.conn.execute(f"SET disabled_optimizers = {literal(disabled)}")
        try:
            yield
        finally:
            self.conn.execute(f"SET disabled_optimizers = {literal(previous)}")

    @contextmanager
    def grouping_dense_keys_by_index(self) -> Iterator[None]:
        # DuckDB's perfect hash aggregate: one slot per key of the range its statistics give, which it
        # uses only up to `perfect_ht_threshold` bits (12 by default). A month of the fact grouped by
        # 2M dense user ids: 0.41 s in a hash table, 0.14 s in 2^21 slots (day 180 of the benchmark).
        previous = int(self.conn.execute("SELECT current_setting('perfect_ht_threshold')").fetchone()[0])
        self.conn.execute(f"SET perfect_ht_threshold = {max(previous, DENSE_KEY_BITS)}")
        try:
            yield
        finally:
            self.conn.execute(f"SET perfect_ht_threshold = {previous}")

    def create_record(self, record: tables.Relation) -> None:
        self.conn.execute(sql.create_table(record.table(), record.columns, key=record.key))

    def add_columns(self, table: str, columns: Sequence[tables.Column]) -> None:
        for column in columns:  # a record created by an earlier version lacks them (so they are nullable)
            self.conn.execute(f"ALTER TABLE {ident(table)} ADD COLUMN IF NOT EXISTS {ident(column.name)} {column.type}")

    def upsert(self, record: tables.Relation, rows: Sequence[tuple]) -> None:
        if rows:
            self.conn.execute(f"INSERT OR REPLACE INTO {ident(record.table())} ({', '.join(record.names())})"
                              f" VALUES {sql.rows_list(rows)}")

    def replace_group(self, record: tables.Relation, group: dict[str, object], rows: Sequence[tuple]) -> None:
        where = " AND ".join(f"{ident(k)} = {sql.value_lit(v)}" for k, v in group.items())
        self.conn.execute(f"DELETE FROM {ident(record.table())} WHERE {where}")
        if rows:
            self.conn.execute(f"INSERT INTO {ident(record.table())} ({', '.join(record.names())})"
                              f" VALUES {sql.rows_list(rows)}")

    def unlog_partitions(self, table: str, periods: Sequence[dt.date]) -> None:
        if periods:
            self.conn.execute(f"DELETE FROM {PARTITION_LOG} WHERE table_name = {literal(table)}"
                              f" AND period_start IN ({', '.join(date_lit(p) for p in sorted(set(periods)))})")

    def delete_partitions(self, table: str, where: str) -> None:
        self.conn.execute(f"DELETE FROM {ident(table)} WHERE {where}")
