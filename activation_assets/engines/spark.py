"""The Spark warehouse: the same SQL (rendered by `dialect.render`), tables in a Spark catalog.

Tables are Parquet tables partitioned by `period_start`. A partition is replaced by a dynamic
partition overwrite (`partitionOverwriteMode=dynamic`) of the rows computed for it: the job writes
to a staging directory and the partitions it carries are swapped in when it commits, so a failed
job leaves the old rows; a partition left with no rows is dropped explicitly. Writing it twice
gives the same table. The partition log is a table partitioned by (table_name, period_start).

What Spark does not give, compared with DuckDB: a transaction around several statements. So the
partitions a step is about to write are taken out of the log first and logged again when written
(in one go when the step's loop ends, also when it fails): whatever happens in between, a partition
holds its old rows or is missing from the log, never empty and logged. Missing partitions are
what the guards refuse to build on, and what the next run writes again.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from filelock import FileLock, Timeout

from activation_assets import tables
from activation_assets.config import ActivationConfig, BehaviorConfig, SparkWarehouseConfig, is_url
from activation_assets.engines.base import LOCK_TIMEOUT_SECONDS, ActivationError, Warehouse, first_line
from activation_assets.engines.dialect import render
from activation_assets.models import sql
from activation_assets.models.sql import PARTITION_LOG, literal

# Spark's types, named as DuckDB names them (the steps compare and create columns in those names).
SPARK_TYPES = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMP WITH TIME ZONE",  # Spark's TIMESTAMP is an instant (TIMESTAMP_LTZ)
    "timestamp_ntz": "TIMESTAMP",
    "date": "DATE",
    "boolean": "BOOLEAN",
    "tinyint": "TINYINT",
    "smallint": "SMALLINT",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "binary": "BLOB",
}
WRITE_VIEW = "_activation_write"


def spark_config(config: SparkWarehouseConfig) -> dict[str, Any]:
    """Session settings: the project's defaults, then the user's `conf:` on top."""
    settings: dict[str, Any] = {
        "spark.app.name": "activation-assets",
        # Tables must outlive the session: a persistent catalog, not Spark's in-memory default.
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.ui.showConsoleProgress": "false",
        # Hive logs a WARN line per partition write; Dagster's logs carry the progress instead.
        "spark.log.level": "ERROR",
    }
    if config.master:
        settings["spark.master"] = config.master
    if config.warehouse_dir:
        settings["spark.sql.warehouse.dir"] = config.warehouse_dir
        if not is_url(config.warehouse_dir) and not _has_metastore(config.conf):
            # Local mode: Hive's embedded Derby metastore next to the tables, not in the cwd.
            metastore = os.path.join(config.warehouse_dir, "metastore_db")
            settings["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
                f"jdbc:derby:;databaseName={metastore};create=true")
            settings["spark.driver.extraJavaOptions"] = f"-Dderby.system.home={config.warehouse_dir}"
    settings.update(config.conf)
    return settings


def _has_metastore(conf: dict[str, Any]) -> bool:
    return any(key in conf for key in (
        "spark.hadoop.javax.jdo.option.ConnectionURL", "spark.hadoop.hive.metastore.uris",
        "spark.sql.catalogImplementation"))


def lock_file(config: SparkWarehouseConfig) -> str | None:
    """A local warehouse's lock file (created with its folder); None for a warehouse at a URL."""
    if config.warehouse_dir and not is_url(config.warehouse_dir):
        os.makedirs(config.warehouse_dir, exist_ok=True)
        return os.path.join(config.warehouse_dir, ".activation.lock")
    return None


def session(settings: dict[str, Any]) -> Any:
    """The process's Spark session with these settings (Spark keeps one per process)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


_held_locks: dict[str, FileLock] = {}


def hold_warehouse_lock(path: str | None, timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
    """Take a local Spark warehouse's lock for the rest of this process, waiting for its holder.

    DuckDB's lock is held per connection; a Spark session cannot be given back as quickly: its JVM
    keeps the embedded metastore (and the tables' listings) until the process ends. So the first
    step of a process (a run worker, an `activation` command) waits for the lock and keeps it:
    a CLI run and a UI run take turns instead of failing on the metastore or writing side by side.
    """
    if path is None or path in _held_locks:
        return
    lock = FileLock(path)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise ActivationError(
            f"waited {timeout:.0f} s for the Spark warehouse {os.path.dirname(path)}: another process of this"
            f" project holds it ({path}; a Spark run or command keeps it until it ends). Wait for that run"
            " to finish, or stop it."
        ) from None
    _held_locks[path] = lock


@contextmanager
def connect(spark_session: Any, database: str = "default", lock: str | None = None) -> Iterator[SparkWarehouse]:
    """A session as the layer's warehouse, once the warehouse's lock is this process's."""
    hold_warehouse_lock(lock)
    warehouse = SparkWarehouse(spark_session, database)
    warehouse.prepare()
    yield warehouse


@contextmanager
def open_warehouse(config: ActivationConfig, read_only: bool = False) -> Iterator[SparkWarehouse]:
    """The configured warehouse outside Dagster (the session starts here)."""
    spark = config.warehouse.spark
    with connect(session(spark_config(spark)), spark.database, lock_file(spark)) as warehouse:
        yield warehouse


def open_for_reading(config: ActivationConfig):
    return open_warehouse(config, read_only=True)


def spark_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JError)


class SparkWarehouse(Warehouse):
    engine = "spark"

    def __init__(self, session: Any, database: str = "default"):
        self.session = session
        self.database = database
        self.errors = spark_errors()
        self._unlogged: dict[str, dict[dt.date, int]] | None = None

    def prepare(self) -> None:
        # Runtime settings the contract depends on, whatever the cluster's defaults are.
        self.session.conf.set("spark.sql.session.timeZone", "UTC")
        self.session.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
        self.session.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(self.database)}")
        self.session.catalog.setCurrentDatabase(self.database)
        self.ensure_partition_log()

    def message(self, exc: BaseException) -> str:
        return first_line(getattr(exc, "getMessage", lambda: str(exc))() or str(exc), exc)

    # --- queries ---
    def _sql(self, statement: str):
        return self.session.sql(render(statement, "spark"))

    def query(self, statement: str) -> list[tuple]:
        return [tuple(row) for row in self._sql(statement).collect()]

    def query_named(self, statement: str) -> tuple[list[str], list[tuple]]:
        frame = self._sql(statement)
        return list(frame.columns), [tuple(row) for row in frame.collect()]

    # --- tables ---
    def table_exists(self, table: str) -> bool:
        return self.session.catalog.tableExists(f"{self.database}.{table}")

    def column_types(self, relation: str) -> dict[str, str]:
        schema = self._sql(f"SELECT * FROM {relation}").schema
        return {field.name: _duckdb_type(field.dataType.simpleString()) for field in schema.fields}

    def file_sources_are_local(self) -> bool:
        return False  # paths may be s3://, abfss://, dbfs:/ ...: Spark reads them

    def source_relation(self, behavior: BehaviorConfig, files: list[str] | None = None) -> str:
        """A temporary view over the source; `where:` applies on top (written in portable SQL)."""
        source = behavior.source
        if source.kind == "table":
            return sql.filtered(sql.table_name(source.location), source.where)
        reader, paths = self.session.read, files or [source.location]
        if source.kind == "parquet":
            frame = reader.option("mergeSchema", "true").parquet(*paths)
        else:
            frame = _typed_like_duckdb(reader.option("header", "true").csv(paths), source.location)
        view = f"_source_{behavior.name}"
        frame.createOrReplaceTempView(view)
        return sql.filtered(sql.ident(view), source.where)

    def create_table(self, table: str, columns: Sequence[tables.Column]) -> None:
        # Spark keeps partition columns last; every write here names its columns, so order is moot.
        # Parquet tables do not enforce NOT NULL
        self.session.sql(render(sql.create_table(table, columns, nullable=True), "spark")
                         + " USING parquet PARTITIONED BY (period_start)")

    def is_view(self, name: str) -> bool:
        return self.table_exists(name) and self.session.catalog.getTable(f"{self.database}.{name}").tableType == "VIEW"

    def create_view(self, name: str, select: str) -> None:
        if self.table_exists(name) and not self.is_view(name):
            self.session.sql(f"DROP TABLE {_quote(name)}")  # written as a table by an earlier version
        self.session.sql(f"CREATE OR REPLACE VIEW {_quote(name)} AS {render(select, 'spark')}")

    def _columns(self, table: str) -> list[str]:
        return [c for c in self.session.table(table).columns if c != "period_start"]

    # --- writes ---
    def stage(self, name: str, select: str) -> None:
        self._sql(select).localCheckpoint(eager=True).createOrReplaceTempView(name)

    def drop_stage(self, name: str) -> None:
        self.session.catalog.dropTempView(name)

    def stage_rows(self, name: str, columns: Sequence[tables.Column], rows: Sequence[tuple]) -> None:
        schema = ", ".join(f"`{c.name}` {'STRING' if c.type == 'VARCHAR' else c.type}" for c in columns)
        self.session.createDataFrame(list(rows), schema=schema).createOrReplaceTempView(name)

    def drop_table(self, table: str) -> None:
        self.session.sql(f"DROP TABLE IF EXISTS {_quote(table)}")

    def create_table_like(self, table: str, stage: str, not_null: Sequence[str] = ()) -> None:  # NOT NULL: not enforced
        self.session.sql(
            f"CREATE TABLE IF NOT EXISTS {_quote(table)} USING parquet PARTITIONED BY (period_start)"
            f" AS SELECT * FROM {_quote(stage)} LIMIT 0")

    def replace_periods(
        self, table: str, periods: Sequence[dt.date], select: str,
        fingerprints: dict[dt.date, tuple[int, int]] | None = None,
    ) -> dict[dt.date, int]:
        self.unlog_partitions(table, periods)  # until the new rows are in, the periods count as missing
        rows = self._sql(select).localCheckpoint(eager=True)
        counts = {r[0]: r[1] for r in rows.groupBy("period_start").count().collect()}
        written = {period: counts.get(period, 0) for period in periods}
        self._drop_partitions(table, [period for period, n in written.items() if n == 0])
        if any(written.values()):
            self._overwrite(table, rows)
        self.record_partitions(table, written, fingerprints)
        return written

    def replace_partition(self, table: str, period: dt.date, select: str) -> int:
        if self._unlogged is None:
            self.unlog_partitions(table, [period])
        # Computed first: a failing query then fails before anything is touched, and Spark refuses
        # to overwrite a table the same statement reads (FirstLast reads its previous partition).
        rows = self._sql(select).localCheckpoint(eager=True)
        count = rows.count()
        if count:
            self._overwrite(table, rows)
        else:  # a dynamic overwrite leaves a partition it has no rows for as it was
            self._drop_partitions(table, [period])
        if self._unlogged is None:
            self.record_partitions(table, {period: count})
        else:
            self._unlogged.setdefault(table, {})[period] = count
        return count

    def _overwrite(self, table: str, rows) -> None:
        """Replace the partitions `rows` fall in, and only those: a dynamic partition overwrite.

        Never a static `INSERT OVERWRITE ... PARTITION (period_start = p)`: that deletes the
        partition before its job runs, so a failed or killed job would leave it empty. A dynamic
        overwrite writes to a staging directory and swaps partitions in when the job commits.
        """
        rows.createOrReplaceTempView(WRITE_VIEW)
        columns = ", ".join(_quote(c) for c in self._columns(table))
        self.session.sql(
            f"INSERT OVERWRITE TABLE {_quote(table)} PARTITION (period_start)"
            f" SELECT {columns}, period_start FROM {WRITE_VIEW}")

    @contextmanager
    def partition_writes(self, tables: Sequence[str], periods: Sequence[dt.date]) -> Iterator[None]:
        # The periods count as missing until their rows are in; then one log write per table for
        # the step instead of one per partition (each Spark write costs ~0.3 s).
        for table in tables:
            self.unlog_partitions(table, periods)
        self._unlogged = {}
        try:
            yield
        finally:
            pending, self._unlogged = self._unlogged, None
            for written, rows in pending.items():
                self.record_partitions(written, rows)

    # --- the records ---
    def create_record(self, record: tables.Relation) -> None:
        # Spark keeps partition columns last: a write replaces whole groups (`written_by`), as partitions.
        groups = record.written_by
        columns = [c for c in record.columns if c.name not in groups] + [record.column(n) for n in groups]
        self.session.sql(render(sql.create_table(record.table(), columns, nullable=True), "spark")
                         + f" USING parquet PARTITIONED BY ({', '.join(groups)})")

    def add_columns(self, table: str, columns: Sequence[tables.Column]) -> None:
        added = ", ".join(f"{_quote(c.name)} {SPARK_CASTS[c.type]}" for c in columns)
        self.session.sql(f"ALTER TABLE {_quote(table)} ADD COLUMNS ({added})")

    def _write_groups(self, record: tables.Relation, rows: Sequence[tuple], static: dict[str, object] | None = None) -> None:
        """INSERT OVERWRITE of the groups `rows` fall in (dynamic partitions), or of the one `static` group."""
        groups = record.written_by
        names = record.names()
        typed = ", ".join(f"CAST({_quote(c.name)} AS {SPARK_CASTS[c.type]}) AS {_quote(c.name)}" for c in record.columns
                          if not static or c.name not in static)
        data = [n for n in names if n not in groups]
        spec = ", ".join(f"{g} = {sql.value_lit(static[g])}" for g in groups) if static else ", ".join(groups)
        selected = ", ".join(map(_quote, data if static else [*data, *groups]))
        values = ", ".join(f"({', '.join(_spark_lit(v) for v, n in zip(row, names) if not static or n not in static)})"
                           for row in rows)
        aliases = ", ".join(_quote(n) for n in names if not static or n not in static)
        self.session.sql(f"INSERT OVERWRITE TABLE {_quote(record.table())} PARTITION ({spec})"
                         f" SELECT {selected} FROM (SELECT {typed} FROM VALUES {values} AS v({aliases})) AS typed")

    def upsert(self, record: tables.Relation, rows: Sequence[tuple]) -> None:
        assert record.written_by == record.key, f"{record.table()}: an upsert replaces whole groups"
        if rows:
            self._write_groups(record, rows)

    def replace_group(self, record: tables.Relation, group: dict[str, object], rows: Sequence[tuple]) -> None:
        assert tuple(group) == record.written_by, f"{record.table()}: written by {record.written_by}"
        if not rows:
            spec = ", ".join(f"{k} = {sql.value_lit(v)}" for k, v in group.items())
            self.session.sql(f"ALTER TABLE {_quote(record.table())} DROP IF EXISTS PARTITION ({spec})")
            return
        self._write_groups(record, rows, static=group)


    def unlog_partitions(self, table: str, periods: Sequence[dt.date]) -> None:
        if periods:
            specs = ", ".join(f"PARTITION (table_name = {literal(table)}, period_start = {literal(p.isoformat())})"
                              for p in sorted(set(periods)))
            self.session.sql(f"ALTER TABLE {PARTITION_LOG} DROP IF EXISTS {specs}")

    def _drop_partitions(self, table: str, periods: Sequence[dt.date]) -> None:
        if periods:
            specs = ", ".join(f"PARTITION (period_start = {literal(p.isoformat())})" for p in sorted(set(periods)))
            self.session.sql(f"ALTER TABLE {_quote(table)} DROP IF EXISTS {specs}")

    def delete_partitions(self, table: str, where: str) -> None:
        self._drop_partitions(table, [r[0] for r in self.query(
            f"SELECT DISTINCT period_start FROM {sql.ident(table)} WHERE {where}")])


# DuckDB's CSV types as Spark casts them from text.
SPARK_CASTS = {
    "VARCHAR": "string", "BIGINT": "bigint", "INTEGER": "int", "SMALLINT": "smallint", "TINYINT": "tinyint", "DOUBLE": "double",
    "FLOAT": "float", "BOOLEAN": "boolean", "DATE": "date", "TIMESTAMP": "timestamp_ntz",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
}


def _typed_like_duckdb(frame: Any, location: str) -> Any:
    """A CSV read as text, then given the types DuckDB's sniffer gives the same files.

    Spark's own inference differs: it reads "007" and "7" as the integer 7, one user, where DuckDB
    keeps zero-padded ids as text. One source must give the same types and rows on both engines.
    A CSV at a URL (which DuckDB does not read here) stays text: the time column is parsed from it
    all the same, and ids are kept exactly as written.
    """
    if is_url(location):
        return frame
    import duckdb

    from pyspark.sql import functions as F

    with duckdb.connect() as conn:
        types = dict(conn.execute(
            f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_csv({literal(location)},"
            " union_by_name = true))").fetchall())
    return frame.select([
        F.col(_quote(c)).cast(SPARK_CASTS[types[c]]).alias(c) if types.get(c) in SPARK_CASTS else F.col(_quote(c))
        for c in frame.columns])


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _duckdb_type(spark_type: str) -> str:
    return SPARK_TYPES.get(spark_type, spark_type.upper())  # decimal(p,s) -> DECIMAL(p,s), ...


def _spark_lit(value: Any) -> str:
    """A value in Spark SQL (a timestamp without a zone is written as Spark's TIMESTAMP_NTZ literal)."""
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP_NTZ '{value.isoformat(sep=' ')}'"
    return sql.value_lit(value)
