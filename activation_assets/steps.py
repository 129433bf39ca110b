"""What each asset does for a list of partitions, on an open DuckDB connection (no Dagster here).

Each step refuses to run on a missing predecessor, writes each partition whole inside one
transaction (delete the window, insert, log it), and returns per-partition numbers for metadata.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb

from . import sql
from .config import BehaviorConfig, Grain
from .periods import first_period, periods_for
from .warehouse import (
    ActivationError,
    column_types,
    record_partitions,
    require_recorded,
    table_column_types,
    table_exists,
    transaction,
)

Progress = Callable[[int, int, dt.date], None]
CONTRACT_COLUMNS = ("period_start", "user_id", "occurred_at", "activity_date")


def _no_progress(done: int, total: int, period: dt.date) -> None:
    pass


def _duckdb_message(exc: duckdb.Error) -> str:
    return str(exc).strip().splitlines()[0]


# --- fact -------------------------------------------------------------------------------------


@dataclass
class FactOutcome:
    per_day: dict[dt.date, dict[str, int]]
    source: dict[str, int]
    columns: dict[str, str] = field(default_factory=dict)


def describe_source(conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig) -> dict[str, str]:
    source = behavior.source
    try:
        columns = column_types(conn, sql.source_relation(source))
    except duckdb.Error as exc:
        raise ActivationError(
            f"behavior {behavior.name!r}: cannot read its source ({source.describe()}): "
            f"{_duckdb_message(exc)}. Check `source:` in the config (paths are relative to the config file;"
            " a table must exist in the database; `where:` must be valid SQL over the source's columns)."
        ) from None
    _refuse_mixed_types(conn, behavior)
    return columns


def _refuse_mixed_types(conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig) -> None:
    """Files of one source must agree on the user and time columns' types.

    Reading a glob unifies differing types (an integer id in one file and a string in another
    become strings), which would quietly change which ids are the same user.
    """
    source = behavior.source
    if source.kind == "table":
        return
    files = sorted(glob.glob(source.location, recursive=True))
    if len(files) < 2:
        return
    reader = "read_parquet" if source.kind == "parquet" else "read_csv"
    seen: dict[str, dict[str, list[str]]] = {}
    for path in files:
        types = column_types(conn, f"{reader}({sql.literal(path)})")
        for column in (behavior.user_column, behavior.time_column):
            seen.setdefault(column, {}).setdefault(types.get(column, "absent"), []).append(path)
    for column, by_type in seen.items():
        if len(by_type) > 1:
            detail = "; ".join(f"{t} in {len(p)} file(s), e.g. {os.path.basename(p[0])}" for t, p in by_type.items())
            raise ActivationError(
                f"behavior {behavior.name!r}: the files of {source.describe()} disagree on the type of column"
                f" {column!r} ({detail}). Rewrite the odd files with the same type; nothing was written."
            )


def check_source_columns(behavior: BehaviorConfig, columns: dict[str, str]) -> str:
    """The time column's type, once the source is known to carry what the contract needs."""
    name, source = behavior.name, behavior.source.describe()
    available = ", ".join(columns)
    for role, column in (("user_column", behavior.user_column), ("time_column", behavior.time_column)):
        if column not in columns:
            raise ActivationError(
                f"behavior {name!r}: the source ({source}) has no column {column!r} (configured as"
                f" {role}). Its columns are: {available}. Set `{role}:` to the right column."
            )
    if behavior.user_column == behavior.time_column:
        raise ActivationError(f"behavior {name!r}: user_column and time_column are both {behavior.user_column!r}")
    clashes = [c for c in CONTRACT_COLUMNS if c in columns and c not in (behavior.user_column, behavior.time_column)]
    if clashes:
        raise ActivationError(
            f"behavior {name!r}: the source ({source}) has column(s) {', '.join(clashes)} that the fact table"
            " derives itself; rename them in a view (`source: {table: ...}`) or pick them as user/time column."
        )
    time_type = columns[behavior.time_column]
    if time_type not in sql.TIMESTAMP_TYPES and time_type != "VARCHAR":
        raise ActivationError(
            f"behavior {name!r}: time column {behavior.time_column!r} of {source} is {time_type}, not a"
            " timestamp. Point `time_column:` at a TIMESTAMP (naive = UTC) or TIMESTAMPTZ column, or a"
            " string that parses as one."
        )
    return time_type


def materialize_fact(
    conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig, days: Sequence[dt.date]
) -> FactOutcome:
    days = sorted(days)
    first_day, last_day = days[0], days[-1]
    table = sql.fact_table(behavior.name)
    columns = describe_source(conn, behavior)
    time_type = check_source_columns(behavior, columns)
    source = behavior.source

    try:
        profile_row = conn.execute(
            sql.source_profile(
                source, behavior.user_column, behavior.time_column, time_type, behavior.timezone,
                behavior.start_date, behavior.end_date,
            )
        ).fetchone()
    except duckdb.Error as exc:
        raise ActivationError(
            f"behavior {behavior.name!r}: reading its source ({source.describe()}) failed: {_duckdb_message(exc)}."
            " Fix the source data (mixed types across files are a common cause) and run again."
        ) from None
    profile = dict(zip(
        ("source_rows", "null_occurred_at", "unparseable_occurred_at", "before_start_date", "after_end_date"),
        profile_row,
    ))
    if profile["source_rows"] == 0:
        raise ActivationError(
            f"behavior {behavior.name!r}: its source ({source.describe()}) has no rows at all. Check the path"
            " and the `where:` filter; an empty day is fine, an empty source is a mistake."
        )
    if profile["unparseable_occurred_at"]:
        examples = [r[0] for r in conn.execute(
            sql.unparseable_examples(source, behavior.time_column, time_type)).fetchall()]
        raise ActivationError(
            f"behavior {behavior.name!r}: {profile['unparseable_occurred_at']} value(s) of time column"
            f" {behavior.time_column!r} in {source.describe()} do not parse as timestamps, e.g. {examples}."
            " Fix them in the source (or filter them out with `where:`); no rows were written."
        )

    try:
        conn.execute(sql.stage_fact(
            source, behavior.user_column, behavior.time_column, time_type, behavior.timezone, first_day, last_day))
    except duckdb.Error as exc:
        raise ActivationError(
            f"behavior {behavior.name!r}: staging {first_day}..{last_day} from {source.describe()} failed:"
            f" {_duckdb_message(exc)}."
        ) from None
    read = {row[0]: {"rows_read": row[1], "null_user_id": row[2]}
            for row in conn.execute(sql.stage_day_counts()).fetchall()}

    with transaction(conn):
        conn.execute(f"CREATE TABLE IF NOT EXISTS {sql.ident(table)} AS SELECT * FROM fact_stage LIMIT 0")
        stored, staged = table_column_types(conn, table), column_types(conn, "fact_stage")
        if stored != staged:
            changed = [
                f"{c}: {stored.get(c, 'absent')} before, {staged.get(c, 'absent')} now"
                for c in dict.fromkeys([*stored, *staged]) if stored.get(c) != staged.get(c)
            ]
            raise ActivationError(
                f"behavior {behavior.name!r}: the source's columns changed since earlier partitions of {table}"
                f" were written ({'; '.join(changed)}). Nothing was written. Make the source consistent, or"
                f" drop {table} (and the behavior's other tables) and materialize every partition again."
            )
        conn.execute(sql.delete_range(table, first_day, last_day))
        conn.execute(sql.insert_fact(table))
        written = dict(conn.execute(sql.rows_per_period(table, first_day, last_day)).fetchall())
        record_partitions(conn, table, {day: written.get(day, 0) for day in days})
    conn.execute("DROP TABLE IF EXISTS fact_stage")

    per_day = {}
    for day in days:
        counts = read.get(day, {"rows_read": 0, "null_user_id": 0})
        rows = written.get(day, 0)
        per_day[day] = {
            "rows": rows,
            "rows_read": counts["rows_read"],
            "dropped_null_user_id": counts["null_user_id"],
            "dropped_duplicates": counts["rows_read"] - counts["null_user_id"] - rows,
        }
    return FactOutcome(per_day=per_day, source=profile, columns=staged)


# --- FirstLast, activation, transitions ---------------------------------------------------------


def _replace_partitions(
    conn: duckdb.DuckDBPyConnection, table: str, periods: Sequence[dt.date], insert: Callable[[dt.date], str],
    progress: Progress,
) -> dict[dt.date, int]:
    """Each partition whole, in order, in a transaction of its own: delete its window, insert, log it."""
    rows: dict[dt.date, int] = {}
    for i, period in enumerate(periods):
        with transaction(conn):
            conn.execute(sql.delete_range(table, period, period))
            conn.execute(insert(period))
            rows[period] = conn.execute(
                f"SELECT count(*) FROM {sql.ident(table)} WHERE period_start = ?", [period]).fetchone()[0]
            record_partitions(conn, table, {period: rows[period]})
        progress(i + 1, len(periods), period)
    return rows


def fact_days(behavior: BehaviorConfig, grain: Grain, period: dt.date) -> list[dt.date]:
    """The days of a period that are inside [start_date, end_date], i.e. the fact partitions it reads."""
    periods = periods_for(behavior, grain)
    first = max(period, behavior.start_date)
    last = periods.last_day(period)
    if behavior.end_date is not None:
        last = min(last, behavior.end_date)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _require_previous(conn, behavior: BehaviorConfig, grain: Grain, table: str, periods: Sequence[dt.date]) -> None:
    start = periods[0]
    if start == first_period(behavior, grain):
        return
    previous = periods_for(behavior, grain).previous(start)
    first = first_period(behavior, grain)
    # Name the first gap, not just the predecessor: that is where a backfill must start.
    require_recorded(
        conn, table, periods_for(behavior, grain).between(first, previous),
        why=f"cannot materialize {table} from {start}: each partition builds on the previous one",
        how=f"Materialize {table} from that partition on (a backfill of the range works), then run this again.",
    )


def _user_type(conn, behavior: BehaviorConfig) -> str:
    fact = sql.fact_table(behavior.name)
    if not table_exists(conn, fact):
        raise ActivationError(f"behavior {behavior.name!r}: {fact} has never been materialized; materialize it first.")
    return table_column_types(conn, fact)["user_id"]


def materialize_firstlast(
    conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, int]:
    periods = sorted(periods)
    table, fact = sql.firstlast_table(behavior.name, grain), sql.fact_table(behavior.name)
    calendar = periods_for(behavior, grain)
    _require_previous(conn, behavior, grain, table, periods)
    require_recorded(
        conn, fact, [day for p in periods for day in fact_days(behavior, grain, p)],
        why=f"cannot materialize {table} for {periods[0]}..{periods[-1]}: it reads every day of its periods",
        how=f"Materialize {fact} for those days first.",
    )
    conn.execute(sql.create_firstlast(table, _user_type(conn, behavior)))
    first = first_period(behavior, grain)
    return _replace_partitions(conn, table, periods, lambda period: sql.firstlast_step(
        table, fact, period, calendar.previous(period), calendar.next(period), is_first=period == first), progress)


def materialize_activation(
    conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, dict[str, int]]:
    periods = sorted(periods)
    table = sql.activation_table(behavior.name, grain)
    firstlast = sql.firstlast_table(behavior.name, grain)
    calendar = periods_for(behavior, grain)
    _require_previous(conn, behavior, grain, table, periods)
    require_recorded(
        conn, firstlast, periods,
        why=f"cannot materialize {table} for {periods[0]}..{periods[-1]}: its states are read off {firstlast}",
        how=f"Materialize {firstlast} for those periods first.",
    )
    conn.execute(sql.create_activation(table, _user_type(conn, behavior)))
    _replace_partitions(conn, table, periods, lambda period: sql.insert_activation(
        table, firstlast, grain, period, calendar.previous(period)), progress)
    return {period: dict(zip(("users", *sql.STATES, "churned"), conn.execute(sql.state_counts(table, period)).fetchone()))
            for period in periods}


def _from_activation(
    conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    table: str, create: str, insert: Callable[[dt.date], str], progress: Progress,
) -> dict[dt.date, int]:
    """Write `table` for each period from that period's activation partition alone."""
    periods = sorted(periods)
    activation = sql.activation_table(behavior.name, grain)
    require_recorded(
        conn, activation, periods,
        why=f"cannot materialize {table} for {periods[0]}..{periods[-1]}: it is computed from {activation}",
        how=f"Materialize {activation} for those periods first.",
    )
    conn.execute(create)
    return _replace_partitions(conn, table, periods, insert, progress)


def materialize_transitions(
    conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, dict[str, int]]:
    table, activation = sql.transitions_table(behavior.name, grain), sql.activation_table(behavior.name, grain)
    _from_activation(conn, behavior, grain, periods, table, sql.create_transitions(table),
                     lambda period: sql.insert_transitions(table, activation, period), progress)
    out: dict[dt.date, dict[str, int]] = {}
    for period in periods:
        # All nine pairs, zeros included, so the UI plots continuous series.
        out[period] = {transition_label(src, dst): 0 for src, dst in sql.TRANSITIONS}
        for src, dst, users in conn.execute(
                f"SELECT from_state, to_state, users FROM {sql.ident(table)} WHERE period_start = ?", [period]
        ).fetchall():
            out[period][transition_label(src, dst)] = users
    return out


def materialize_growth(
    conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, dict[str, float | int | None]]:
    table, activation = sql.growth_table(behavior.name, grain), sql.activation_table(behavior.name, grain)
    _from_activation(conn, behavior, grain, periods, table, sql.create_growth(table),
                     lambda period: sql.insert_growth(table, activation, period), progress)
    cursor = conn.execute(
        f"SELECT period_start, {', '.join(sql.GROWTH_COLUMNS)} FROM {sql.ident(table)}"
        " WHERE period_start BETWEEN ? AND ?", [min(periods), max(periods)])
    return {row[0]: dict(zip(sql.GROWTH_COLUMNS, row[1:])) for row in cursor.fetchall()}


def materialize_cohorts(
    conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, int]:
    table, activation = sql.cohorts_table(behavior.name, grain), sql.activation_table(behavior.name, grain)
    return _from_activation(conn, behavior, grain, periods, table, sql.create_cohorts(table),
                            lambda period: sql.insert_cohorts(table, activation, grain, period), progress)


def materialize_distributions(
    conn: duckdb.DuckDBPyConnection, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, dict[str, int]]:
    table, activation = sql.distributions_table(behavior.name, grain), sql.activation_table(behavior.name, grain)
    _from_activation(conn, behavior, grain, periods, table, sql.create_distributions(table),
                     lambda period: sql.insert_distributions(table, activation, period), progress)
    out: dict[dt.date, dict[str, int]] = {
        p: {f"{m}_{name}": 0 for m in ("return_gap", "streak") for _, name in sql.BUCKETS} for p in periods}
    for period, measure, bucket, users in conn.execute(
            f"SELECT period_start, measure, bucket, users FROM {sql.ident(table)} WHERE period_start BETWEEN ? AND ?",
            [min(periods), max(periods)]).fetchall():
        out[period][f"{measure}_{bucket}"] = users
    return out


def transition_label(from_state: str | None, to_state: str) -> str:
    return f"{from_state or 'null'}_to_{to_state}"
