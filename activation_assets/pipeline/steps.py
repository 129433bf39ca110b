"""What each asset does for a list of partitions, on an open warehouse (no Dagster here).

Each step refuses to run on a missing predecessor, replaces each partition whole (on DuckDB inside
one transaction: delete the window, insert, log it; on Spark an overwrite of that partition), and
returns per-partition numbers for metadata. A bare DuckDB connection is accepted too.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from activation_assets import tables as relations
from activation_assets.models import sql
from activation_assets.config import BehaviorConfig, Grain, is_url
from activation_assets.periods import end_exclusive, existing_periods, first_period, periods_for
from activation_assets.engines import ActivationError, Warehouse, as_warehouse
from activation_assets.models import forecast as growth

Progress = Callable[[int, int, dt.date], None]
CONTRACT_COLUMNS = relations.FACT.names()
STAGE = "fact_stage"
# A chain of partitions is checkpointed this many partitions at a time: DuckDB holds what is
# committed in memory until a checkpoint, and FirstLast's 112 days at 500k users checkpointed at
# once took 0.9 GB, four at a time 0.6 GB, in the same time.
CHECKPOINT_EVERY = 4
EMPTY_DAY = (0, 0)  # the fingerprint of a day without source rows


def _no_progress(done: int, total: int, period: dt.date) -> None:
    pass


# --- the settings the tables were built with ----------------------------------------------------


def reconcile_definition(conn: Warehouse, behavior: BehaviorConfig) -> list[str]:
    """Forget every partition that the behavior's current settings do not give; say which.

    A new source (its location, `where:`, user or time column) changes every fact row: like a new
    timezone, it forgets every partition, so that the tables equal a fresh run over the new source.

    Every step starts here, and so does the CLI before it plans, so that after a change of the
    window (start_date, end_date), timezone or week start the tables end up equal to a fresh run:
    - rows outside the window are always dropped: fact days outside [start_date, end_date], and
      periods before the first or not complete by end_date;
    - a new start_date or timezone changes every period (first periods, local dates): all grain
      partitions are forgotten, and with a new timezone every fact day too; a new week start, the
      weekly ones; new engagement windows, the daily ones. Forgotten partitions count as missing,
      so they are built again in order.
    """
    wh = as_warehouse(conn)
    current = definition(behavior)
    recorded = wh.recorded_definition(behavior.name)
    if recorded == current:
        return []
    was = dict(zip(sql.DEFINITION_FIELDS, recorded)) if recorded else {}
    now = dict(zip(sql.DEFINITION_FIELDS, current))
    # A database from before `source` was recorded: take the current one as what it was built from.
    if was and was["source"] is None:
        was["source"] = now["source"]
    # One from before segments (or the growth model) were recorded had none.
    for name in ("segments", "growth_model"):
        if was and was[name] is None:
            was[name] = "none"
    # One from before the rolling engagement: its daily FirstLast has no days_seen_bits to carry on.
    before_bits = bool(was) and was["engagement"] is None
    if before_bits:
        was["engagement"] = "none (built before days_seen_bits)"
    changed = [f"{name} {was[name]} -> {value}" for name, value in now.items() if was and was[name] != value]
    moved = {name for name in ("start_date", "timezone", "week_start", "source", "segments")
             if was and was[name] != now[name]}
    with wh.transaction():
        every_day = bool(moved & {"timezone", "source"})  # every fact row is read or dated anew
        wh.forget_partitions(sql.fact_table(behavior.name), "TRUE" if every_day else sql.outside(
            behavior.start_date, behavior.end_date))
        if every_day:  # the local days each file holds, or the files themselves, are others now
            wh.update_source_files(behavior.name, {}, list(wh.source_files(behavior.name)))
        for grain in Grain:  # configured or not: a grain dropped from the config keeps no stale rows either
            rebuilt = bool(moved - {"week_start"}) or (grain is Grain.weekly and "week_start" in moved) or (
                grain is Grain.daily and was and was["engagement"] != now["engagement"])
            end = end_exclusive(behavior, grain)
            keep = sql.outside(first_period(behavior, grain), end - dt.timedelta(days=1) if end else None)
            for table in sql.grain_tables(behavior.name, grain):
                wh.forget_partitions(table, "TRUE" if rebuilt else keep)
            if grain is Grain.daily:  # the forecasts read the daily engagement tables
                model_changed = bool(was) and was["growth_model"] != now["growth_model"]
                first = behavior.forecast_start
                keep = sql.outside(first, end - dt.timedelta(days=1) if end else None) if first else "TRUE"
                for table in sql.forecast_tables(behavior.name):
                    wh.forget_partitions(table, "TRUE" if rebuilt or model_changed else keep)
        if before_bits:  # configured or not: a daily grain added later must not find the old table
            wh.drop_table(sql.firstlast_table(behavior.name, Grain.daily))
        if "segments" in moved:  # the state and the segment tables have other columns now
            for grain in Grain:
                for table in (sql.firstlast_table(behavior.name, grain), *sql.segment_tables(behavior.name, grain)):
                    wh.drop_table(table)
        wh.record_definition(behavior.name, current)
    return changed


def definition(behavior: BehaviorConfig) -> tuple:
    """The recorded settings of a behavior, in `sql.DEFINITION_FIELDS` order."""
    source = (f"{behavior.source.describe()}; user_column {behavior.user_column};"
              f" time_column {behavior.time_column}")
    return (behavior.start_date, behavior.end_date, behavior.timezone, behavior.week_start, source,
            behavior.engagement.describe(), behavior.describe_segments(),
            behavior.growth_model.describe() if behavior.growth_model else "none")


# --- fact -------------------------------------------------------------------------------------


@dataclass
class FactOutcome:
    per_day: dict[dt.date, dict[str, int]]
    source: dict[str, int]  # source-wide counts, when the run read the whole source; else empty
    columns: dict[str, str] = field(default_factory=dict)
    files_read: int | None = None  # of a source in Hive-style day directories


def describe_source(
    conn: Warehouse, behavior: BehaviorConfig, files: list[str] | None = None,
) -> tuple[str, dict[str, str]]:
    """The source (or only `files` of its glob) as a relation of this warehouse, and its columns' types."""
    wh = as_warehouse(conn)
    try:
        relation = wh.source_relation(behavior, files)
        columns = wh.column_types(relation)
    except wh.errors as exc:
        raise ActivationError(_unreadable(wh, behavior, exc)) from None
    if wh.file_sources_are_local():
        _refuse_mixed_types(wh, behavior, files)
    return relation, columns


# A Hive-style day directory, e.g. events/date=2025-03-01/part-0.parquet
HIVE_DAY = re.compile(r"(?:^|/)[A-Za-z_][A-Za-z0-9_]*=(\d{4}-\d{2}-\d{2})(?=/|$)")


def day_files(behavior: BehaviorConfig, first_day: dt.date, last_day: dt.date) -> list[str] | None:
    """The files of a source laid out in Hive-style day directories (`.../date=YYYY-MM-DD/...`)
    that can hold rows of the local days first_day..last_day, found from the paths alone.

    The key's day may be a UTC day or a local one, so a day either side is read too. None when the
    source is not laid out that way (a table, a URL, files without a day key), or when no file falls
    in the range: then the whole source is read, bounded by the time column.
    """
    source = behavior.source
    if source.kind == "table" or is_url(source.location):
        return None
    keyed = []
    for path in sorted(glob.glob(source.location, recursive=True)):
        keys = HIVE_DAY.findall(os.path.dirname(path))
        if not keys:
            return None
        keyed.append((dt.date.fromisoformat(keys[-1]), path))
    low, high = first_day - dt.timedelta(days=1), last_day + dt.timedelta(days=1)
    return [path for day, path in keyed if low <= day <= high] or None


def _unreadable(wh: Warehouse, behavior: BehaviorConfig, exc: BaseException) -> str:
    """Why a source cannot be read, in the user's terms: the filter, the file format, or the rest."""
    source, message = behavior.source, wh.message(exc).rstrip(".!")
    start = f"behavior {behavior.name!r}: cannot read its source ({source.describe()})"
    if source.where:
        unfiltered = behavior.model_copy(update={"source": source.model_copy(update={"where": None})})
        try:
            columns = wh.column_types(wh.source_relation(unfiltered))
        except wh.errors:
            pass
        else:
            return (f"behavior {behavior.name!r}: its `where:` filter ({source.where}) does not run on its source"
                    f" ({source.kind} {source.location}): {message}. Fix the filter: it is SQL over the"
                    f" source's columns ({', '.join(columns)}).")
    if source.upstream and "does not exist" in message.lower():
        what = (f"dbt model {source.dbt_model!r}: run `dbt build` (`activation materialize` does)" if source.dbt_model
                else f"upstream asset {'/'.join(source.asset or ())!r}: materialize it first")
        return (f"{start}: {message}. Its relation {source.location} is built by the {what}; or set `table:` to"
                " the relation's name in the warehouse if it differs.")
    if source.kind == "parquet" and any(w in message.lower() for w in ("magic bytes", "parquet file")):
        return (f"{start}: a file it matches is not a Parquet file ({message}). Point `parquet:` at Parquet"
                " files only (e.g. a glob such as events/*.parquet), or read CSV files with `csv:`.")
    return (f"{start}: {message}. Check `source:` in the config (paths are relative to the config file;"
            " a table must exist in the warehouse; the files of a glob must agree on their columns' types).")


def source_last_day(conn: Warehouse, behavior: BehaviorConfig, relation: str, time_type: str) -> dt.date | None:
    """The local date of the source's latest event (None for an empty source): one pass over the
    time column, made only for behaviors without end_date, to say when partitions will be empty."""
    instant = sql.instant_expr(behavior.time_column, time_type)
    day = as_warehouse(conn).query_one(
        f"SELECT max({sql.local_date_expr(instant, behavior.timezone)}) FROM {relation}")
    return day[0] if day else None


def _refuse_mixed_types(wh: Warehouse, behavior: BehaviorConfig, files: list[str] | None = None) -> None:
    """Files of one source (or of the ones a run reads) must agree on the user and time columns' types.

    Reading a glob unifies differing types (an integer id in one file and a string in another
    become strings), which would quietly change which ids are the same user.
    """
    source = behavior.source
    if source.kind == "table":
        return
    files = files or sorted(glob.glob(source.location, recursive=True))
    if len(files) < 2:
        return
    seen: dict[str, dict[str, list[str]]] = {}
    for path in files:
        types = wh.column_types(wh.source_relation(behavior, [path]))
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
    check_segment_columns(behavior, columns, f"the source ({source})")
    time_type = columns[behavior.time_column]
    if time_type not in sql.TIMESTAMP_TYPES and time_type != "VARCHAR":
        raise ActivationError(
            f"behavior {name!r}: time column {behavior.time_column!r} of {source} is {time_type}, not a"
            " timestamp. Point `time_column:` at a TIMESTAMP (naive = UTC) or TIMESTAMPTZ column, or a"
            " string that parses as one."
        )
    return time_type


def unparseable_times(conn: Warehouse, behavior: BehaviorConfig, relation: str, time_type: str) -> str | None:
    """The time column read in full (a CSV's as written, whatever its sniffed sample says): one
    sentence when some of its values do not parse as timestamps (the fact step would refuse them),
    quoting a few and where they are; else None. A timestamp column of a typed format is skipped."""
    wh = as_warehouse(conn)
    as_written = wh.source_with_time_as_written(behavior)
    if as_written is None and time_type in sql.TIMESTAMP_TYPES:
        return None
    try:
        count, examples = wh.query_one(sql.unparseable_in_source(as_written or relation, behavior.time_column))
    except wh.errors as exc:
        raise ActivationError(_unreadable(wh, behavior, exc)) from None
    if not count:
        return None
    where = wh.locate_values(behavior, behavior.time_column, examples)
    quoted = ", ".join(repr(v) + (f" ({where[v]})" if v in where else "") for v in examples)
    return (f"behavior {behavior.name!r}: {count} value(s) of time column {behavior.time_column!r} in"
            f" {behavior.source.describe()} do not parse as timestamps, e.g. {quoted}. Fix them in the source"
            " (or filter them out with `where:`): materialize refuses them.")


def segment_values(conn: Warehouse, behavior: BehaviorConfig, relation: str) -> dict[str, list[tuple[str | None, int]]]:
    """Per segment, the values of its column in the source (as text, null included) with their rows,
    the most frequent first: one pass over the source per segment."""
    wh = as_warehouse(conn)
    out = {}
    for segment in behavior.segments:
        column = sql.ident(segment.column)
        out[segment.key] = [tuple(row) for row in wh.query(
            f"SELECT CAST({column} AS VARCHAR) AS value, count(*) AS n FROM {relation}"
            f" GROUP BY 1 ORDER BY n DESC, value NULLS LAST")]
    return out


def materialize_fact(conn: Warehouse, behavior: BehaviorConfig, days: Sequence[dt.date]) -> FactOutcome:
    """Replace the fact partitions `days` with the source's valid rows of those local days.

    A day costs a day: the source is read through the time bound (and, laid out in Hive-style day
    directories, only the files of those days), once. Only a run over every existing day, or a
    source whose time column is text (which cannot be bounded), reads the whole source, and counts,
    source-wide, the rows that can never be activity. On an engine that holds a stage in memory
    (`Warehouse.staged_days`), a range is staged and written that many days at a time, each in one
    transaction.
    """
    wh = as_warehouse(conn)
    reconcile_definition(wh, behavior)
    days = sorted(days)
    first_day, last_day = days[0], days[-1]
    table = sql.fact_table(behavior.name)
    files = day_files(behavior, first_day, last_day)
    relation, columns = describe_source(wh, behavior, files)
    time_type = check_source_columns(behavior, columns)
    source = behavior.source
    existing = existing_periods(behavior, Grain.daily)
    bounded = sql.time_bound(behavior.time_column, time_type, first_day, last_day) is not None
    whole = not bounded or (bool(existing) and first_day <= existing[0] and last_day >= existing[-1])

    others = [c for c in columns if c not in (behavior.user_column, behavior.time_column)]
    window = (behavior.start_date, behavior.end_date) if whole else None
    size = wh.staged_days if bounded and wh.staged_days else len(days)
    chunks = [days[i:i + size] for i in range(0, len(days), size)]

    def stage_select(first: dt.date, last: dt.date, window, rows: str = relation) -> str:
        return sql.stage_select(rows, behavior.user_column, behavior.time_column, others, time_type,
                                behavior.timezone, first, last, window=window)

    def failed(exc, first: dt.date, last: dt.date) -> ActivationError:
        return ActivationError(
            f"behavior {behavior.name!r}: reading {first}..{last} from its source ({source.describe()})"
            f" failed: {wh.message(exc)}. Fix the source data (mixed types across files are a common cause)"
            " and run again; `activation validate` lists values of the time column that do not parse, with"
            " their lines."
        )

    # One chunk: the stage of its days serves the source-wide counts too (one scan). Several: the
    # counts are a scan of their own, of the rows that may be outside the window (converting every
    # row's time to its local date cost 2.6 s of a 6.7 s fact backfill at 500k users x 112 days), and
    # each chunk stages only its days.
    outside = sql.maybe_outside(relation, behavior.time_column, time_type, behavior.start_date, behavior.end_date)
    profiled = (f"({stage_select(first_day, last_day, window, outside)}) AS whole_source" if len(chunks) > 1
                else STAGE)
    profile, read, written = {}, {}, {}
    for number, chunk in enumerate(chunks):
        try:
            wh.stage(STAGE, stage_select(chunk[0], chunk[-1], window if len(chunks) == 1 else None))
            if whole and number == 0:
                names = ("null_occurred_at", "unparseable_occurred_at", "before_start_date", "after_end_date")
                profile = dict(zip(names, wh.query_one(
                    sql.stage_profile(behavior.start_date, behavior.end_date, profiled))))
        except wh.errors as exc:
            raise failed(exc, first_day, last_day) from None
        if profile.get("unparseable_occurred_at"):
            examples = [r[0] for r in wh.query(sql.unparseable_examples_in(profiled))]
            raise ActivationError(
                f"behavior {behavior.name!r}: {profile['unparseable_occurred_at']} value(s) of time column"
                f" {behavior.time_column!r} in {source.describe()} do not parse as timestamps, e.g. {examples}."
                " Fix them in the source (or filter them out with `where:`); no rows were written."
            )
        read.update({row[0]: {"rows_read": row[1], "null_user_id": row[2], "fingerprint": row[3]}
                     for row in wh.query(sql.stage_day_counts(chunk[0], chunk[-1], others, STAGE))})
        if number == 0 and not read and not wh.query(f"SELECT 1 FROM {relation} LIMIT 1"):
            raise _empty_source(behavior)  # an empty day is fine, an empty source is a mistake
        chunk_written, staged = _write_fact_days(wh, behavior, table, chunk, read)
        written.update(chunk_written)
        wh.drop_stage(STAGE)

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
    return FactOutcome(per_day=per_day, source=profile, columns=staged, files_read=len(files) if files else None)


def _empty_source(behavior: BehaviorConfig) -> ActivationError:
    return ActivationError(
        f"behavior {behavior.name!r}: its source ({behavior.source.describe()}) has no rows at all. Check the path"
        " and the `where:` filter; an empty day is fine, an empty source is a mistake."
    )


def _write_fact_days(wh: Warehouse, behavior: BehaviorConfig, table: str, days: list[dt.date],
                     read: dict) -> tuple[dict[dt.date, int], dict[str, str]]:
    """The staged rows of `days` replace those days of the fact, in one transaction; the rows
    written per day, and the stage's column types."""
    with wh.transaction():
        wh.create_table_like(table, STAGE, not_null=[c.name for c in relations.FACT.columns if not c.nullable])
        stored, staged = wh.table_column_types(table), wh.column_types(STAGE)
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
        fingerprints = {day: (read[day]["rows_read"], read[day]["fingerprint"]) if day in read else EMPTY_DAY
                        for day in days}
        # A day written again with the rows it had keeps its time in the log: nothing read off it
        # becomes outdated (a forced rewrite, or a source file touched without a change).
        logged = {period: at for _, period, at in wh.log_entries([table]) if period in set(days)}
        columns = list(stored)
        before = dict(_fingerprints(wh, table, columns, sorted(logged))) if logged else {}
        written = wh.replace_periods(table, days, sql.fact_select(days, STAGE), fingerprints)
        if logged:
            after = _fingerprints(wh, table, columns, sorted(logged))
            same = [day for day in logged if before.get(day, (0, None)) == after.get(day, (0, None))]
            if same:
                wh.upsert(relations.PARTITIONS_RECORD,
                          [(table, day, written[day], logged[day], *fingerprints[day]) for day in same])
    return written, staged


# --- FirstLast, activation, transitions ---------------------------------------------------------


def _fingerprints(wh: Warehouse, table: str, columns: list[str], periods: list[dt.date]) -> dict:
    return {row[0]: (row[1], row[2]) for row in wh.query(sql.rows_fingerprint(table, columns, periods))}


def _replace_partitions(
    wh: Warehouse, table: str, periods: Sequence[dt.date], select: Callable[[dt.date], str], progress: Progress,
) -> dict[dt.date, int]:
    """Each partition whole, in order, on its own (see `Warehouse.replace_partition`)."""
    rows: dict[dt.date, int] = {}
    with wh.partition_writes([table], periods):
        for i, period in enumerate(periods):
            rows[period] = wh.replace_partition(table, period, select(period))
            if (i + 1) % CHECKPOINT_EVERY == 0:
                wh.checkpoint()
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


def _require_previous(wh: Warehouse, behavior: BehaviorConfig, grain: Grain, table: str, periods: Sequence[dt.date]) -> None:
    start = periods[0]
    if start == first_period(behavior, grain):
        return
    previous = periods_for(behavior, grain).previous(start)
    first = first_period(behavior, grain)
    # Name the first gap, not just the predecessor: that is where a backfill must start.
    wh.require_recorded(
        table, periods_for(behavior, grain).between(first, previous),
        why=f"cannot materialize {table} from {start}: each partition builds on the previous one",
        how=f"Materialize {table} from that partition on (a backfill of the range works), then run this again.",
    )


def _fact_types(wh: Warehouse, behavior: BehaviorConfig) -> dict[str, str]:
    fact = sql.fact_table(behavior.name)
    if not wh.table_exists(fact):
        raise ActivationError(f"behavior {behavior.name!r}: {fact} has never been materialized; materialize it first.")
    return wh.table_column_types(fact)


def check_segment_columns(behavior: BehaviorConfig, columns: Collection[str], where: str) -> None:
    """Every segment's column is a column of the source (`columns`, as `where` names them), and
    neither the user nor the time column."""
    for segment in behavior.segments:
        if segment.column in (behavior.user_column, behavior.time_column):
            raise ActivationError(
                f"behavior {behavior.name!r}: segment {segment.key!r} uses column {segment.column!r}, which is the"
                " behavior's user or time column. Point the segment's `column:` at an attribute of the user.")
        if segment.column not in columns:
            available = ", ".join(c for c in columns if c not in CONTRACT_COLUMNS) or "none"
            raise ActivationError(
                f"behavior {behavior.name!r}: segment {segment.key!r} reads column {segment.column!r}, which"
                f" {where} does not have (its other columns: {available}). Fix the segment's `column:` or"
                " add the column to the source; nothing was written.")


def firstlast_columns(grain: Grain) -> tuple[relations.Column, ...]:
    return relations.FIRSTLAST.columns_for(grain)


def materialize_firstlast(
    conn: Warehouse, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, int]:
    wh, periods = as_warehouse(conn), sorted(periods)
    table, fact = sql.firstlast_table(behavior.name, grain), sql.fact_table(behavior.name)
    calendar = periods_for(behavior, grain)
    reconcile_definition(wh, behavior)
    _require_previous(wh, behavior, grain, table, periods)
    wh.require_recorded(
        fact, [day for p in periods for day in fact_days(behavior, grain, p)],
        why=f"cannot materialize {table} for {periods[0]}..{periods[-1]}: it reads every day of its periods",
        how=f"Materialize {fact} for those days first.",
    )
    types = _fact_types(wh, behavior)
    check_segment_columns(behavior, types, f"its fact table {fact}")
    segments = behavior.segments
    columns = firstlast_columns(grain) + relations.segment_columns(segments, relations.FIRSTLAST)
    wh.create_table(table, relations.with_user_type(columns, types["user_id"]))
    first = first_period(behavior, grain)
    extra = {"segments": segments, "time_type": types["occurred_at"]} if segments else {}
    with wh.hash_joins_build_on_the_right():  # on the period's active users, not on everyone seen so far
        return _replace_partitions(wh, table, periods, lambda period: sql.firstlast_select(
            table, fact, period, calendar.previous(period), calendar.next(period), is_first=period == first,
            days_seen_bits=grain is Grain.daily, **extra), progress)


def materialize_activation(
    conn: Warehouse, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, dict[str, int]]:
    """The activation relation is a view over FirstLast (every column is a function of the user's
    FirstLast row), so materializing its partitions writes no rows: it (re)defines the view, and
    records the partitions once their FirstLast is there (and, in the asset, once checked)."""
    wh, periods = as_warehouse(conn), sorted(periods)
    table = sql.activation_table(behavior.name, grain)
    firstlast = sql.firstlast_table(behavior.name, grain)
    reconcile_definition(wh, behavior)
    _require_previous(wh, behavior, grain, table, periods)
    wh.require_recorded(
        firstlast, periods,
        why=f"cannot materialize {table} for {periods[0]}..{periods[-1]}: its states are read off {firstlast}",
        how=f"Materialize {firstlast} for those periods first.",
    )
    engagement = behavior.engagement
    wh.create_view(table, sql.activation_view(firstlast, grain, engagement.week_days, engagement.month_days,
                                              segments=behavior.segments))
    rows = {row[0]: dict(zip(("users", *sql.STATES, "churned"), row[1:]))
            for row in wh.query(sql.state_counts_by_period(table, periods[0], periods[-1]))}
    counts = {period: rows.get(period, dict.fromkeys(("users", *sql.STATES, "churned"), 0)) for period in periods}
    wh.record_partitions(table, {period: numbers["users"] for period, numbers in counts.items()})
    progress(len(periods), len(periods), periods[-1])
    return counts


PERIODS_PER_STATEMENT = 7  # a backfill's hundred days cost 15 plannings, not 100, and a statement (and
# the profile it stages) holds a week of rows, not the whole range (at 2M x 180, when the view still
# joined FirstLast with its previous partition, all 180 days at once took the peak RSS from 2.3 to 3.5 GB)


def _replace_together(
    wh: Warehouse, selects: Callable[[Sequence[dt.date]], dict[str, str]], periods: Sequence[dt.date],
    progress: Progress, stage: Callable[[Sequence[dt.date]], None] | None = None,
) -> dict[str, dict[dt.date, int]]:
    """The partitions `periods` of each table of `selects(chunk)` replaced by its rows of those
    periods, PERIODS_PER_STATEMENT periods by one statement per table (a period without rows is emptied), in order, each chunk all
    or nothing where the engine has transactions; `stage(chunk)` first prepares what they read."""
    written: dict[str, dict[dt.date, int]] = {}
    for start in range(0, len(periods), PERIODS_PER_STATEMENT):
        chunk = periods[start:start + PERIODS_PER_STATEMENT]
        if stage is not None:
            stage(chunk)
        with wh.transaction():
            for table, select in selects(chunk).items():
                # Only the chunk's rows, whatever the select reads (a stage may hold every period).
                rows = f"SELECT * FROM ({select}) AS chunk_rows WHERE {sql.in_periods(chunk)}"
                written.setdefault(table, {}).update(wh.replace_periods(table, chunk, rows))
        progress(start + len(chunk), len(periods), chunk[-1])
    return written


def _require_input(wh: Warehouse, source: str, table: str, periods: Sequence[dt.date]) -> None:
    """`source`, which `table` is computed from, has every one of the (sorted) `periods`."""
    wh.require_recorded(
        source, periods,
        why=f"cannot materialize {table} for {periods[0]}..{periods[-1]}: it is computed from {source}",
        how=f"Materialize {source} for those periods first.",
    )


def _written(wh: Warehouse, table: str, columns: Sequence[str], periods: Sequence[dt.date]) -> list[tuple]:
    """(period_start, *columns) of the rows a step just wrote, for its metadata."""
    names = ", ".join(sql.ident(c) for c in columns)
    return wh.query(f"SELECT period_start, {names} FROM {sql.ident(table)}"
                    f" WHERE period_start BETWEEN {sql.date_lit(min(periods))} AND {sql.date_lit(max(periods))}")


def materialize_summaries(
    conn: Warehouse, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    tables: Collection[str] | None = None, progress: Progress = _no_progress,
) -> dict[str, dict[dt.date, object]]:
    """The transitions, growth, cohorts and distributions of each period (all of
    `sql.summary_tables`, or those of them in `tables`), written together: each is summed off the
    period's summary profile, one pass over its activation rows (`sql.summary_profile_select`), where
    four steps would read them four times. Returns, per table, each period's numbers for its metadata."""
    wh, periods = as_warehouse(conn), sorted(periods)
    transitions, growth, cohorts, distributions = sql.summary_tables(behavior.name, grain)
    chosen = [table for table in (transitions, growth, cohorts, distributions) if tables is None or table in tables]
    activation, profile = sql.activation_table(behavior.name, grain), f"_summary_profile_{behavior.name}_{grain.value}"
    reconcile_definition(wh, behavior)
    _require_input(wh, activation, ", ".join(chosen), periods)
    columns = {transitions: relations.TRANSITIONS_RELATION.columns, growth: relations.GROWTH.columns,
               cohorts: relations.COHORTS.columns, distributions: relations.DISTRIBUTIONS.columns}
    for table in chosen:
        wh.create_table(table, columns[table])

    def selects(chunk: Sequence[dt.date]) -> dict[str, str]:
        select = {transitions: sql.transitions_select(profile), growth: sql.growth_select(profile, chunk),
                  cohorts: sql.cohorts_select(profile, grain), distributions: sql.distributions_select(profile)}
        return {table: select[table] for table in chosen}

    written = _replace_together(wh, selects, periods, progress,
                                stage=lambda chunk: wh.stage(profile, sql.summary_profile_select(activation, chunk)))
    wh.drop_stage(profile)
    numbers = {transitions: _transition_numbers, growth: _growth_numbers, cohorts: lambda *_: written[cohorts],
               distributions: _distribution_numbers}
    return {table: numbers[table](wh, table, periods) for table in chosen}


def _transition_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict[str, int]]:
    # All nine pairs, zeros included, so the UI plots continuous series.
    out = {period: {transition_label(src, dst): 0 for src, dst in sql.TRANSITIONS} for period in periods}
    for period, src, dst, users in _written(wh, table, ("from_state", "to_state", "users"), periods):
        out[period][transition_label(src, dst)] = users
    return out


def _growth_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict]:
    return {row[0]: dict(zip(sql.GROWTH_COLUMNS, row[1:])) for row in _written(wh, table, sql.GROWTH_COLUMNS, periods)}


def _distribution_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict[str, int]]:
    out = {p: {f"{m}_{name}": 0 for m in ("return_gap", "streak") for _, name in sql.BUCKETS} for p in periods}
    for period, measure, bucket, users in _written(wh, table, ("measure", "bucket", "users"), periods):
        out[period][f"{measure}_{bucket}"] = users
    return out


def materialize_transitions(
    conn: Warehouse, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    progress: Progress = _no_progress,
) -> dict[dt.date, dict[str, int]]:
    """The transitions alone (the benchmarks time the core tables apart)."""
    table = sql.transitions_table(behavior.name, grain)
    return materialize_summaries(conn, behavior, grain, periods, [table], progress)[table]


# --- rolling engagement (daily) ---------------------------------------------------------------------


def materialize_rolling_engagement(
    conn: Warehouse, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    tables: Collection[str] | None = None, progress: Progress = _no_progress,
) -> dict[str, dict[dt.date, dict]]:
    """The rolling-engagement tables of each day (all of `sql.engagement_tables`, or those of them in
    `tables`), written together: the day's engagement profile, from one pass over its activation
    rows, gives both the engagement transitions and the stickiness, and the engagement numbers are
    summed off the transitions. Returns, per table, each day's numbers for its metadata."""
    wh, periods = as_warehouse(conn), sorted(periods)
    week, month = behavior.engagement.week_days, behavior.engagement.month_days
    transitions, engagement, stickiness = sql.engagement_tables(behavior.name)
    chosen = [table for table in (transitions, engagement, stickiness) if tables is None or table in tables]
    activation, profile = sql.activation_table(behavior.name, grain), f"_engagement_profile_{behavior.name}"
    profiled = transitions in chosen or stickiness in chosen
    reconcile_definition(wh, behavior)
    for table in chosen:
        if (source := sql.reads(behavior.name, grain, table)) not in chosen:  # not written here first
            _require_input(wh, source, table, periods)
    columns = {transitions: relations.ENGAGEMENT_TRANSITIONS.columns, engagement: relations.ENGAGEMENT.columns,
               stickiness: relations.STICKINESS.columns}
    def selects(chunk: Sequence[dt.date]) -> dict[str, str]:
        # In dependency order: the transitions before the numbers summed off them.
        select = {transitions: sql.engagement_transitions_select(profile, week, month),
                  engagement: sql.engagement_select(transitions, chunk), stickiness: sql.stickiness_select(profile)}
        return {table: select[table] for table in chosen}

    for table in chosen:
        wh.create_table(table, columns[table])
    _replace_together(wh, selects, periods, progress, stage=(
        (lambda chunk: wh.stage(profile, sql.engagement_profile_select(activation, chunk, week, month)))
        if profiled else None))
    if profiled:
        wh.drop_stage(profile)
    numbers = {transitions: _engagement_transition_numbers, engagement: _engagement_numbers,
               stickiness: _stickiness_numbers}
    return {table: numbers[table](wh, table, periods) for table in chosen}


def _engagement_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict]:
    names = list(relations.ENGAGEMENT.names()[1:])
    return {row[0]: dict(zip(names, row[1:])) for row in _written(wh, table, names, periods)}


def _engagement_transition_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict]:
    out: dict[dt.date, dict[str, int]] = {period: {} for period in periods}
    for period, src, dst, users in _written(wh, table, ("from_state", "to_state", "users"), periods):
        out[period][transition_label(src, dst)] = users
    return out


def _stickiness_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict]:
    """Per day its rows and the mean active days of each window's active users (the number a
    stickiness chart is read by)."""
    out: dict[dt.date, dict[str, float | None]] = {
        period: {"rows": 0, "mean_active_days_week": None, "mean_active_days_month": None} for period in periods}
    for period, window, rows, mean in wh.query(
            f"SELECT period_start, {sql.ident('window')}, count(*), sum(active_days * users) / sum(users)"
            f" FROM {sql.ident(table)}"
            f" WHERE period_start BETWEEN {sql.date_lit(min(periods))} AND {sql.date_lit(max(periods))}"
            f" GROUP BY period_start, {sql.ident('window')}"):
        out[period]["rows"] += rows
        out[period][f"mean_active_days_{window}"] = mean
    return out


# --- segments ------------------------------------------------------------------------------------------


def materialize_segments(
    conn: Warehouse, behavior: BehaviorConfig, grain: Grain, periods: Sequence[dt.date],
    tables: Collection[str] | None = None, progress: Progress = _no_progress,
) -> dict[str, dict[dt.date, dict]]:
    """The segment tables of each period (all of `sql.segment_tables`, or those of them in `tables`),
    written together off one profile of the periods' activation rows (`sql.segment_profile_select`).
    A period with more distinct values of a segment than its `max_values` fails the step before any
    row of the run is written. Returns, per table, each period's numbers."""
    wh, periods = as_warehouse(conn), sorted(periods)
    all_tables = sql.segment_tables(behavior.name, grain)
    chosen = [t for t in all_tables if tables is None or t in tables]
    if not behavior.segments:
        raise ActivationError(f"behavior {behavior.name!r} has no `segments:`; its segment tables are not built.")
    transitions = sql.segment_transitions_table(behavior.name, grain)
    activation, profile = sql.activation_table(behavior.name, grain), f"_segment_profile_{behavior.name}"
    reconcile_definition(wh, behavior)
    for table in chosen:
        if (source := sql.reads(behavior.name, grain, table)) not in chosen:
            _require_input(wh, source, table, periods)
        whole = sql.segment_whole(behavior.name, grain, table)
        wh.require_recorded(
            whole, periods, why=f"cannot materialize {table} for {periods[0]}..{periods[-1]}: its values add up to"
            f" {whole}, and its checks compare the two", how=f"Materialize {whole} for those periods first.")
    relation_of = {r.table(behavior.name, grain): r for r in relations.SEGMENT_RELATIONS}

    def selects(chunk: Sequence[dt.date]) -> dict[str, str]:
        # In dependency order: the transitions before the growth summed off them.
        select = {
            transitions: sql.segment_transitions_select(profile),
            sql.segment_growth_table(behavior.name, grain): sql.segment_growth_select(transitions, chunk),
            sql.segment_engagement_table(behavior.name): sql.segment_engagement_select(profile),
        }
        return {table: select[table] for table in chosen}

    profiled = any(sql.reads(behavior.name, grain, t) == activation for t in chosen)
    if profiled:
        engagement = behavior.engagement
        with_previous = sql.activation_view(  # the activation rows of the view, with each segment's prev_N
            sql.firstlast_table(behavior.name, grain), grain, engagement.week_days, engagement.month_days,
            segments=behavior.segments, previous_values=True)
        wh.stage(profile, sql.segment_profile_select(with_previous, periods, behavior.segments,
                                                     daily=grain is Grain.daily))
        _refuse_too_many_values(wh, behavior, grain, profile)
    for table in chosen:
        wh.create_table(table, relation_of[table].columns)
    # The profile of every period is small (grouped rows) and staged whole: a partition with too many
    # values refuses the run before any row of it is written. Its periods are written in chunks.
    _replace_together(wh, selects, periods, progress)
    if profiled:
        wh.drop_stage(profile)
    return {table: _segment_numbers(wh, table, periods) for table in chosen}


def _refuse_too_many_values(wh: Warehouse, behavior: BehaviorConfig, grain: Grain, profile: str) -> None:
    """Fail, naming the segment and the first partition, when a partition of the profile holds more
    distinct values of a segment than its `max_values` (nothing has been written yet)."""
    limits = {s.key: s for s in behavior.segments}
    over = [(period, name, seen) for period, name, seen in wh.query(sql.segment_values_seen(profile))
            if seen > limits[name].max_values]
    if not over:
        return
    wh.drop_stage(profile)
    period, name, seen = min(over)
    segment = limits[name]
    more = f" (and {len(over) - 1} more partition(s))" if len(over) > 1 else ""
    raise ActivationError(
        f"behavior {behavior.name!r}: segment {name!r} (column {segment.column!r}) has {seen} distinct values in"
        f" the {grain.value} partition {period}{more}, more than its max_values {segment.max_values}. List the"
        " values to keep with `values:` (the rest become 'other') or raise `max_values:`; nothing of this run"
        " was written.")


def _segment_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict]:
    """Per period: its rows, the values seen per segment, and its users (every segment's add up to them)."""
    out: dict[dt.date, dict] = {p: {"rows": 0, "values": {}} for p in periods}
    measure = "users" if "transitions" in table else "users_ever"
    for period, segment, rows, values, users in wh.query(
            f"SELECT period_start, segment, count(*), count(DISTINCT value), sum({measure}) FROM {sql.ident(table)}"
            f" WHERE period_start BETWEEN {sql.date_lit(min(periods))} AND {sql.date_lit(max(periods))}"
            f" GROUP BY period_start, segment ORDER BY segment"):
        out[period]["rows"] += rows
        out[period]["values"][segment] = values
        out[period]["users"] = users
    return out


def transition_label(from_state: str | None, to_state: str) -> str:
    return f"{from_state or 'null'}_to_{to_state}"


# --- the growth model (daily, from start_date + L) ---------------------------------------------------


def materialize_forecasts(
    conn: Warehouse, behavior: BehaviorConfig, periods: Sequence[dt.date],
    tables: Collection[str] | None = None, progress: Progress = _no_progress,
) -> dict[str, dict[dt.date, dict]]:
    """The growth model's tables of each day d (all of `sql.forecast_tables`, or those in `tables`):
    the rates over the engagement transitions of d-L+1 .. d and the projection from d's states,
    computed in Python from those few hundred rows, then the accuracy of the forecasts made 1, 7
    and 28 days before d. Returns, per table, each day's numbers for its metadata."""
    wh, periods = as_warehouse(conn), sorted(periods)
    model = behavior.growth_model
    if model is None:
        raise ActivationError(f"behavior {behavior.name!r} has no growth_model: setting, so no forecasts")
    window_days, horizon = model.window_days, model.horizon_days
    forecast, rates, accuracy = sql.forecast_tables(behavior.name)
    chosen = [table for table in (forecast, rates, accuracy) if tables is None or table in tables]
    transitions, engagement, _ = sql.engagement_tables(behavior.name)
    reconcile_definition(wh, behavior)
    first_read = periods[0] - dt.timedelta(days=window_days - 1)
    read = [first_read + dt.timedelta(days=i) for i in range((periods[-1] - first_read).days + 1)]
    projected = forecast in chosen or rates in chosen
    if projected:
        for source in (transitions, engagement):
            _require_input(wh, source, chosen[0], read)
    if accuracy in chosen:
        _require_input(wh, engagement, accuracy, periods)
        earlier = sorted({d - dt.timedelta(days=h) for d in periods for h in relations.ACCURACY_HORIZONS
                          if h <= horizon and d - dt.timedelta(days=h) >= behavior.forecast_start
                          and (forecast not in chosen or d - dt.timedelta(days=h) < periods[0])})
        if earlier:
            _require_input(wh, forecast, accuracy, earlier)
        elif forecast not in chosen and not wh.table_exists(forecast):
            raise ActivationError(f"cannot materialize {accuracy}: it compares the forecasts of {forecast}, which"
                                  " has never been materialized; materialize it first.")
    moves: dict[dt.date, list] = {}
    states: dict[dt.date, dict] = {}
    if projected:
        for day, from_state, to_state, users in wh.query(sql.window_transitions(transitions, read[0], read[-1])):
            moves.setdefault(day, []).append((from_state, to_state, users))
        names = (*relations.ENGAGEMENT_STATES, "users_ever")
        states = {row[0]: dict(zip(names, row[1:])) for row in wh.query(
            sql.window_engagement(engagement, read[0], read[-1]))}
    scenarios = growth.scenarios(behavior)

    def window(day: dt.date) -> growth.Window:
        days = [day - dt.timedelta(days=i) for i in range(window_days - 1, -1, -1)]
        return growth.Window([m for d in days for m in moves.get(d, [])], [states[d]["new"] for d in days],
                             {s: states[day][s] for s in relations.ENGAGEMENT_STATES})

    def selects(chunk: Sequence[dt.date]) -> dict[str, str]:
        out, forecast_rows, rate_rows = {}, [], []
        for day in chunk if projected else ():
            seen = window(day)
            matrix, projections = growth.forecast(seen, horizon, scenarios)
            for name, days in projections.items():
                for k, counts in enumerate(days, 1):
                    forecast_rows.append((day, name, k, day + dt.timedelta(days=k),
                                          *(counts[c] for c in relations.FORECAST.names()[4:])))
            rate_rows += [(day, s, t, p) for s in relations.ENGAGEMENT_STATES for t, p in matrix[s].items() if p > 0]
            rate_rows.append((day, None, "new", seen.inflow))
        if forecast in chosen:
            wh.stage_rows(FORECAST_STAGE, relations.FORECAST.columns, forecast_rows)
            out[forecast] = f"SELECT * FROM {sql.ident(FORECAST_STAGE)}"
        if rates in chosen:
            wh.stage_rows(RATES_STAGE, relations.FORECAST_RATES.columns, rate_rows)
            out[rates] = f"SELECT * FROM {sql.ident(RATES_STAGE)}"
        if accuracy in chosen:
            out[accuracy] = sql.accuracy_select(forecast, engagement, chunk)
        return out

    for table in chosen:
        wh.create_table(table, {forecast: relations.FORECAST, rates: relations.FORECAST_RATES,
                                accuracy: relations.FORECAST_ACCURACY}[table].columns)
    _replace_together(wh, selects, periods, progress)
    for stage in (FORECAST_STAGE, RATES_STAGE) if projected else ():
        wh.drop_stage(stage)
    numbers = {forecast: lambda: _forecast_numbers(wh, forecast, periods, horizon),
               rates: lambda: _rate_numbers(wh, rates, periods),
               accuracy: lambda: _accuracy_numbers(wh, accuracy, periods)}
    return {table: numbers[table]() for table in chosen}


FORECAST_PLOTTED = ("dau", "mau")
FORECAST_STAGE, RATES_STAGE = "_forecast_rows", "_forecast_rate_rows"


def _forecast_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date], horizon: int) -> dict[dt.date, dict]:
    """Per day, the projected DAU and MAU at 7, 28 and H days of each scenario."""
    horizons = sorted({h for h in (7, 28, horizon) if h <= horizon})
    out: dict[dt.date, dict] = {period: {"dagster/row_count": 0} for period in periods}
    for period, scenario, k, dau, mau in _written(wh, table, ("scenario", "horizon", "dau", "mau"), periods):
        out[period]["dagster/row_count"] += 1
        if k in horizons:
            out[period] |= {f"{scenario}_dau_{k}d": dau, f"{scenario}_mau_{k}d": mau}
    return out


def _rate_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict]:
    """Per day, the window's next-day retention of each state (its users active the next day) and
    the inflow of new users a day."""
    state_rate = {state: rate for rate, state in relations.RETENTION_RATES}
    out: dict[dt.date, dict] = {period: {"dagster/row_count": 0, **dict.fromkeys(state_rate.values(), 0.0)}
                                for period in periods}
    for period, from_state, to_state, rate in _written(wh, table, ("from_state", "to_state", "rate"), periods):
        out[period]["dagster/row_count"] += 1
        if from_state is None:
            out[period]["new_users_per_day"] = rate
        elif to_state in relations.ENGAGEMENT_ACTIVE:
            out[period][state_rate[from_state]] += rate
    return out


ERRORS_AVERAGED_DAYS = 28


def _accuracy_numbers(wh: Warehouse, table: str, periods: Sequence[dt.date]) -> dict[dt.date, dict]:
    """Per day, the relative error of the DAU and MAU forecasts made 1, 7 and 28 days before, and
    the mean absolute relative error of each over the 28 days ending on it."""
    first = min(periods) - dt.timedelta(days=ERRORS_AVERAGED_DAYS - 1)
    errors: dict[tuple[str, int], dict[dt.date, float]] = {}
    for period, horizon, measure, error in wh.query(
            f"SELECT period_start, horizon, measure, relative_error FROM {sql.ident(table)}"
            f" WHERE period_start BETWEEN {sql.date_lit(first)} AND {sql.date_lit(max(periods))}"
            f" AND measure IN ({sql.values_list(FORECAST_PLOTTED)}) AND relative_error IS NOT NULL"):
        errors.setdefault((measure, horizon), {})[period] = error
    out: dict[dt.date, dict] = {}
    for period in periods:
        numbers: dict = {"dagster/row_count": 0}
        for (measure, horizon), by_day in sorted(errors.items()):
            if period in by_day:
                numbers[f"{measure}_error_{horizon}d"] = by_day[period]
            recent = [abs(e) for d, e in by_day.items() if 0 <= (period - d).days < ERRORS_AVERAGED_DAYS]
            if recent:
                numbers[f"{measure}_abs_error_{horizon}d_mean_28d"] = sum(recent) / len(recent)
        out[period] = numbers
    for (period,) in wh.query(f"SELECT period_start FROM {sql.ident(table)} WHERE {sql.in_periods(periods)}"):
        out[period]["dagster/row_count"] += 1
    return out
