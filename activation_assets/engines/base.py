"""What every engine offers the steps and checks: the `Warehouse` interface, and the records
(the partition log, the source files, the definitions) written once over it.

The steps (`pipeline/steps.py`) and checks (`checks/`) speak to a `Warehouse`: run a query, keep a
stage, replace one partition of a table whole, record it in the partition log. Each engine is one
module (`duckdb.py`, `spark.py`) implementing it; the registry (`engines/__init__.py`) is the one
place an engine is chosen. The SQL they run is the same text, rendered per engine by `dialect.render`.

The partition log (`_activation_partitions`) records, in the same transaction as the data (where the
engine has transactions), which partition of which table has been written. It is what lets a step
refuse to build on a predecessor that was never materialized (Dagster itself does not check), and
it costs one tiny row a partition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from activation_assets import tables
from activation_assets.config import BehaviorConfig
from activation_assets.models.sql import DEFINITIONS, PARTITION_LOG, SOURCE_FILES, date_lit, ident, literal

LOCK_TIMEOUT_SECONDS = 30 * 60


class ActivationError(Exception):
    """A problem a user can act on; the message names the behavior, table or column and what to do."""


class Warehouse:
    """What the steps need of an engine. Statements are DuckDB SQL; `run`/`query` render them."""

    engine = "abstract"
    # Fact days a range run stages at once (None: the whole range), where a stage is held in memory.
    staged_days: int | None = None
    errors: tuple[type[BaseException], ...] = ()

    # --- queries ---
    def query(self, statement: str) -> list[tuple]:
        raise NotImplementedError

    def query_named(self, statement: str) -> tuple[list[str], list[tuple]]:
        raise NotImplementedError

    def query_one(self, statement: str) -> tuple:
        rows = self.query(statement)
        return rows[0] if rows else ()

    def frame(self, statement: str):
        """A small result as a pandas DataFrame (reports, previews), dates as pandas timestamps."""
        import pandas as pd  # the CLI's start need not pay for it

        names, rows = self.query_named(statement)
        frame = pd.DataFrame.from_records(rows, columns=names)
        for name in names:
            if len(frame) and isinstance(frame[name].iloc[0], dt.date):
                frame[name] = pd.to_datetime(frame[name])
        return frame

    def message(self, exc: BaseException) -> str:
        """The first line of an engine error, for messages that name the behavior and what to do."""
        return first_line(str(exc), exc)

    # --- tables ---
    def table_exists(self, table: str) -> bool:
        raise NotImplementedError

    def column_types(self, relation: str) -> dict[str, str]:
        """Column name -> type of a relation, in DuckDB's names (TIMESTAMP, VARCHAR, BIGINT, ...)."""
        raise NotImplementedError

    def table_column_types(self, table: str) -> dict[str, str]:
        return self.column_types(ident(table))

    def source_relation(self, behavior: BehaviorConfig, files: list[str] | None = None) -> str:
        """The source as a relation; `files` restricts a file source to those files."""
        raise NotImplementedError

    def file_sources_are_local(self) -> bool:
        return True

    def source_with_time_as_written(self, behavior: BehaviorConfig) -> str | None:
        """The source with its time column as the file writes it (text), for a file format whose
        reader types columns from a sample; None when the source relation already reads it so."""
        return None

    def locate_values(self, behavior: BehaviorConfig, column: str, values: Sequence[str]) -> dict[str, str]:
        """Where in the source's files each of `values` of `column` first occurs ("file, line N"), for
        the engines that can say; {} otherwise."""
        return {}

    def create_table(self, table: str, columns: Sequence[tables.Column]) -> None:
        raise NotImplementedError

    def is_view(self, name: str) -> bool:
        raise NotImplementedError

    def create_view(self, name: str, select: str) -> None:
        """`name` as a view of `select`, replacing a view or a table of that name."""
        raise NotImplementedError

    # --- writes ---
    def stage(self, name: str, select: str) -> None:
        """Keep the result of `select` as a temporary relation `name` for the rest of the step."""
        raise NotImplementedError

    def drop_stage(self, name: str) -> None:
        raise NotImplementedError

    def stage_rows(self, name: str, columns: Sequence[tables.Column], rows: Sequence[tuple]) -> None:
        """Keep rows computed in Python (a few thousand at most) as a temporary relation `name` of
        `columns`, for a SELECT to write them: handed over as data, not parsed as SQL literals."""
        raise NotImplementedError

    def drop_table(self, table: str) -> None:
        """Drop a table written by an earlier version whose columns the current one cannot carry on."""
        raise NotImplementedError

    def create_table_like(self, table: str, stage: str, not_null: Sequence[str] = ()) -> None:
        """Create `table` (unless it exists) with the columns of `stage`, those of `not_null` declared
        NOT NULL where the engine enforces it."""
        raise NotImplementedError

    def replace_periods(
        self, table: str, periods: Sequence[dt.date], select: str,
        fingerprints: dict[dt.date, tuple[int, int]] | None = None,
    ) -> dict[dt.date, int]:
        """Replace the partitions `periods` of `table` with the rows of `select` (a partition without
        rows is emptied), log them (a fact's with the fingerprints of the source rows they come from),
        return rows per period."""
        raise NotImplementedError

    def replace_partition(self, table: str, period: dt.date, select: str) -> int:
        """Replace partition `period` of `table` with the rows of `select` (all of them in it), log it."""
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    @contextmanager
    def hash_joins_build_on_the_right(self) -> Iterator[None]:
        """Statements inside build each hash join's table on the side the SQL writes on the right
        (where a step's SQL puts the smaller side); an engine that does not tell leaves it to its planner."""
        yield

    @contextmanager
    def grouping_dense_keys_by_index(self) -> Iterator[None]:
        """Statements inside group integer keys of a small range (user ids 1..N of a few million) in an
        array indexed by the key rather than a hash table; an engine without such a plan ignores it."""
        yield

    def checkpoint(self) -> None:
        """Write what was committed into the database's own files, where the engine otherwise holds it
        in memory (DuckDB until a checkpoint); nothing to do elsewhere."""

    @contextmanager
    def partition_writes(self, tables: Sequence[str], periods: Sequence[dt.date]) -> Iterator[None]:
        """Around a step's loop of `replace_partition` calls over `periods` of `tables` (an engine
        without transactions unlogs them first and logs what it wrote in one go)."""
        yield

    # --- the records (the partition log, source files, definitions): written once, here ---
    def ensure_partition_log(self) -> None:
        """Create the records, and add the columns a record created by an earlier version lacks."""
        for record in tables.RECORDS:
            name = record.table()
            if not self.table_exists(name):
                self.create_record(record)
                continue
            present = self.table_column_types(name)
            missing = [c for c in record.columns if c.name not in present]
            if missing:
                self.add_columns(name, missing)

    def record_partitions(
        self, table: str, rows: dict[dt.date, int], fingerprints: dict[dt.date, tuple[int, int]] | None = None,
    ) -> None:
        """Log partitions as written now, with their row counts and, for fact days, the
        (rows, hash) fingerprint of the source rows they were written from."""
        self._log({table: rows}, fingerprints)

    def _log(
        self, written: dict[str, dict[dt.date, int]], fingerprints: dict[dt.date, tuple[int, int]] | None = None,
    ) -> None:
        """One write of the log for every (table, period) given (each write costs a few ms however small)."""
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        rows = [(table, day, count, now, *(fingerprints or {}).get(day, (None, None)))
                for table, counts in written.items() for day, count in counts.items()]
        if rows:
            self.upsert(tables.PARTITIONS_RECORD, rows)

    def log_entries(self, tables: Sequence[str]) -> list[tuple[str, dt.date, dt.datetime]]:
        """(table, partition, written_at) of every logged partition of `tables`."""
        if not tables or not self.table_exists(PARTITION_LOG):
            return []
        names = ", ".join(literal(t) for t in tables)
        return [tuple(row) for row in self.query(
            f"SELECT table_name, period_start, written_at FROM {PARTITION_LOG} WHERE table_name IN ({names})")]

    def recorded_fingerprints(self, table: str) -> dict[dt.date, tuple[int | None, int | None]]:
        """Fact day -> (source rows, source hash) it was written from (None for a day logged by an
        older version, which recorded none)."""
        if not self.table_exists(PARTITION_LOG):
            return {}
        return {row[0]: (row[1], row[2]) for row in self.query(
            f"SELECT period_start, source_rows, source_hash FROM {PARTITION_LOG} WHERE table_name = {literal(table)}")}

    def source_files(self, behavior: str) -> dict[str, tuple[int, int, dt.date | None, dt.date | None]]:
        """path -> (size, mtime_ns, first local day, last local day) as last seen."""
        if not self.table_exists(SOURCE_FILES):
            return {}
        return {row[0]: tuple(row[1:]) for row in self.query(
            f"SELECT path, size, mtime_ns, first_day, last_day FROM {SOURCE_FILES}"
            f" WHERE behavior = {literal(behavior)}")}

    def update_source_files(
        self, behavior: str, seen: dict[str, tuple[int, int, dt.date | None, dt.date | None]], gone: Sequence[str],
    ) -> None:
        # No transaction of its own (the caller's, if any): a record half updated only makes files
        # look new, and a new file's days are read again.
        entries = {**self.source_files(behavior), **seen}
        for path in gone:
            entries.pop(path, None)
        self.replace_group(tables.SOURCE_FILES_RECORD, {"behavior": behavior},
                           [(behavior, path, *entry) for path, entry in entries.items()])

    def recorded_periods(self, table: str, first: dt.date, last: dt.date) -> set[dt.date]:
        rows = self.query(
            f"SELECT period_start FROM {PARTITION_LOG} WHERE table_name = {literal(table)}"
            f" AND period_start BETWEEN {date_lit(first)} AND {date_lit(last)}")
        return {row[0] for row in rows}

    def all_recorded(self) -> list[tuple[str, dt.date]]:
        if not self.table_exists(PARTITION_LOG):
            return []
        return [(table, day) for table, day in self.query(f"SELECT table_name, period_start FROM {PARTITION_LOG}")]

    def forget_partitions(self, table: str, where: str) -> None:
        """Drop the partitions of `table` whose period_start satisfies `where`, rows and log entries."""
        if self.table_exists(table) and not self.is_view(table):
            self.delete_partitions(table, where)
        self.unlog_partitions(table, [r[0] for r in self.query(
            f"SELECT period_start FROM {PARTITION_LOG} WHERE table_name = {literal(table)} AND ({where})")])

    def recorded_definition(self, behavior: str) -> tuple | None:
        """What a behavior's tables were built with."""
        if not self.table_exists(DEFINITIONS):
            return None
        rows = self.query(f"SELECT {', '.join(tables.DEFINITION_FIELDS)} FROM {DEFINITIONS}"
                          f" WHERE behavior = {literal(behavior)}")
        return tuple(rows[0]) if rows else None

    def record_definition(self, behavior: str, values: tuple) -> None:
        self.upsert(tables.DEFINITIONS_RECORD, [(behavior, *values)])

    # --- what each engine writes the records with ---
    def create_record(self, record: tables.Relation) -> None:
        raise NotImplementedError

    def add_columns(self, table: str, columns: Sequence[tables.Column]) -> None:
        raise NotImplementedError

    def upsert(self, record: tables.Relation, rows: Sequence[tuple]) -> None:
        """Write `rows` (in the record's column order), each replacing the row of the same key."""
        raise NotImplementedError

    def replace_group(self, record: tables.Relation, group: dict[str, object], rows: Sequence[tuple]) -> None:
        """Replace every row of the record whose `group` columns have these values with `rows`."""
        raise NotImplementedError

    def unlog_partitions(self, table: str, periods: Sequence[dt.date]) -> None:
        """Take partitions of `table` out of the log (their rows stay until written again)."""
        raise NotImplementedError

    def delete_partitions(self, table: str, where: str) -> None:
        """Delete the rows of the partitions of `table` whose period_start satisfies `where`."""
        raise NotImplementedError

    def require_recorded(self, table: str, needed: Iterable[dt.date], why: str, how: str) -> None:
        """Fail, naming the first missing partition, unless every `needed` partition of `table` exists."""
        needed = sorted(set(needed))
        if not needed:
            return
        present = self.recorded_periods(table, needed[0], needed[-1])
        missing = [day for day in needed if day not in present]
        if missing:
            more = f" (and {len(missing) - 1} more up to {missing[-1]})" if len(missing) > 1 else ""
            raise ActivationError(
                f"{why}: partition {missing[0]} of {table} has not been materialized{more}. {how}"
            )


def first_line(text: str, exc: BaseException) -> str:
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
