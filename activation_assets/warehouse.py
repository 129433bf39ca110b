"""DuckDB access: one writer at a time, whole-partition transactions, and a log of written partitions.

DuckDB lets one process open a database file at a time, and a second one fails at once. Dagster's
concurrency pool (shipped in the project-local instance config) serialises runs of one instance;
the file lock here also serialises everything else — a `DAGSTER_HOME` without that config, the
CLI next to the UI, tests — by waiting instead of failing.

The partition log (`_activation_partitions`) records, in the same transaction as the data, which
partition of which table has been written. It is what lets a step refuse to build on a predecessor
that was never materialized (Dagster itself does not check), and it costs one tiny row a partition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import duckdb
from dagster_duckdb import DuckDBResource
from filelock import FileLock, Timeout

from .sql import PARTITION_LOG, date_lit, ident, literal

LOCK_TIMEOUT_SECONDS = 30 * 60


class ActivationError(Exception):
    """A problem a user can act on; the message names the behavior, table or column and what to do."""


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


@contextmanager
def connect(resource: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """The assets' connection: held under the cross-process lock, with the session time zone
    pinned to UTC (so a timestamp without a zone means UTC, as the contract says)."""
    with database_lock(resource.database), resource.get_connection() as conn:
        # DuckDBResource closes its connection only when the block succeeds; a failed step would
        # otherwise keep the database file open (and locked) until garbage collection.
        try:
            conn.execute("SET TimeZone = 'UTC'")
            ensure_partition_log(conn)
            yield conn
        finally:
            conn.close()


@contextmanager
def connect_database(
    database: str, read_only: bool = False, memory_limit: str | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The same, outside Dagster (the CLI's planning, validation and summary)."""
    config = {"memory_limit": memory_limit} if memory_limit else {}
    with database_lock(database), duckdb.connect(database, read_only=read_only, config=config) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


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


def ensure_partition_log(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {PARTITION_LOG} (
            table_name VARCHAR NOT NULL,
            period_start DATE NOT NULL,
            row_count BIGINT NOT NULL,
            PRIMARY KEY (table_name, period_start)
        )"""
    )


def record_partitions(conn: duckdb.DuckDBPyConnection, table: str, rows: dict[dt.date, int]) -> None:
    if not rows:
        return
    values = ", ".join(f"({literal(table)}, {date_lit(day)}, {count})" for day, count in rows.items())
    conn.execute(f"INSERT OR REPLACE INTO {PARTITION_LOG} VALUES {values}")


def recorded_periods(
    conn: duckdb.DuckDBPyConnection, table: str, first: dt.date, last: dt.date
) -> set[dt.date]:
    rows = conn.execute(
        f"SELECT period_start FROM {PARTITION_LOG} WHERE table_name = ? AND period_start BETWEEN ? AND ?",
        [table, first, last],
    ).fetchall()
    return {row[0] for row in rows}


def require_recorded(
    conn: duckdb.DuckDBPyConnection, table: str, needed: Iterable[dt.date], why: str, how: str
) -> None:
    """Fail, naming the first missing partition, unless every `needed` partition of `table` exists."""
    needed = sorted(set(needed))
    if not needed:
        return
    present = recorded_periods(conn, table, needed[0], needed[-1])
    missing = [day for day in needed if day not in present]
    if missing:
        more = f" (and {len(missing) - 1} more up to {missing[-1]})" if len(missing) > 1 else ""
        raise ActivationError(
            f"{why}: partition {missing[0]} of {table} has not been materialized{more}. {how}"
        )


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()[0]
    )


def column_types(conn: duckdb.DuckDBPyConnection, relation_sql: str) -> dict[str, str]:
    """Column name -> DuckDB type of any relation (a table name or a parenthesised query)."""
    return {row[0]: row[1] for row in conn.execute(f"DESCRIBE SELECT * FROM {relation_sql}").fetchall()}


def table_column_types(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return column_types(conn, ident(table))
