"""SQL that implements the activation contract, built by small pure functions (no Dagster here).

Every function returns SQL text in DuckDB's dialect; `dialect.render` turns it into Spark SQL, so
the activation logic exists once. The models are SELECTs: how a partition is replaced (delete and
insert in a DuckDB transaction, an INSERT OVERWRITE of one partition on Spark) belongs to the
warehouse (`warehouse.py`, `spark.py`). Dates are passed as literals computed in Python, so each
statement reads like the definition it implements for one period `p` (and its predecessor `q`).

The incremental state, FirstLast(p), holds per user ever seen by the end of p:

    first_active_period   start of first(u)
    last_active_period    start of the latest active period <= p
    streak_start_period   start of the run of consecutive active periods that ends at last_active_period
    prior_active_period   the latest active period before that run began (NULL if none)
    active_periods        active periods from first(u) to p
    days_seen_bits        (daily grain only) bit i set iff active i days before p, i = 0..62

FirstLast(p) is FirstLast(q) joined with the users active in p, nothing else. Every activation
column of (u, p) — including prev_state, the state in q — is a function of that one row, so the
activation relation is a view: a projection of FirstLast, and no step ever reads the fact history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from activation_assets.config import Grain, SegmentConfig
from activation_assets import tables
from activation_assets.tables import (  # noqa: F401 (the vocabularies, for the SQL here and its readers)
    ACTIVE_STATES, BITS_KEPT, BUCKETS, DEFINITION_FIELDS, ENGAGEMENT_ACTIVE, ENGAGEMENT_STATES, RETENTION_RATES,
    STATES, TRANSITIONS, Column, grain_tables,
)

PARTITION_LOG = tables.PARTITIONS_RECORD.table()
DEFINITIONS = tables.DEFINITIONS_RECORD.table()
SOURCE_FILES = tables.SOURCE_FILES_RECORD.table()
# The order-independent hash of a fact day's source rows is kept modulo this prime (fits a BIGINT).
HASH_MODULUS = 9223372036854775783


# --- names and literals -----------------------------------------------------------------------


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


ACTIVE_LIST = "(" + ", ".join(literal(s) for s in ACTIVE_STATES) + ")"  # for `state IN ACTIVE_LIST`


def date_lit(day: dt.date) -> str:
    return f"DATE '{day.isoformat()}'"


def value_lit(value: dt.datetime | dt.date | int | str | None) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):  # naive, UTC
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return date_lit(value) if isinstance(value, dt.date) else literal(str(value))


def values_list(values: tuple) -> str:
    return ", ".join(value_lit(v) for v in values)


def rows_list(rows: Sequence[tuple]) -> str:
    """`(a, b), (c, d)`: rows as the VALUES of an INSERT."""
    return ", ".join(f"({values_list(row)})" for row in rows)


def fact_table(behavior: str) -> str:
    return tables.FACT.table(behavior)


def firstlast_table(behavior: str, grain: Grain | str) -> str:
    return tables.FIRSTLAST.table(behavior, grain)


def activation_table(behavior: str, grain: Grain | str) -> str:
    return tables.ACTIVATION.table(behavior, grain)


def transitions_table(behavior: str, grain: Grain | str) -> str:
    return tables.TRANSITIONS_RELATION.table(behavior, grain)


def outside(first: dt.date | None, last: dt.date | None) -> str:
    """A predicate on period_start: the partitions before `first` or after `last` (None: no bound)."""
    parts = ([f"period_start < {date_lit(first)}"] if first else []) + (
        [f"period_start > {date_lit(last)}"] if last else [])
    return " OR ".join(parts) or "FALSE"


def periods_between(grain: Grain, earlier: str, later: str) -> str:
    """Number of whole periods from the period starting at `earlier` to the one at `later`."""
    if grain is Grain.daily:
        return f"date_diff('day', {earlier}, {later})"
    if grain is Grain.weekly:
        return f"(date_diff('day', {earlier}, {later}) // 7)"
    return f"date_diff('month', {earlier}, {later})"


# --- the fact ---------------------------------------------------------------------------------


def table_name(dotted: str) -> str:
    return ".".join(ident(part) for part in dotted.split("."))


def filtered(relation: str, where: str | None) -> str:
    return f"(SELECT * FROM {relation} WHERE ({where}))" if where else relation


TIMESTAMP_TYPES = ("TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE")


def instant_expr(column: str, column_type: str) -> str:
    """The time column as a TIMESTAMPTZ; a timestamp without a zone is UTC (the contract).

    Strings are parsed with TRY_CAST under the session time zone, which the warehouse pins to
    UTC, so a naive string is UTC too and an unparseable one becomes NULL (counted, then refused).
    """
    col = ident(column)
    if column_type == "TIMESTAMP WITH TIME ZONE":
        return col
    if column_type in TIMESTAMP_TYPES:
        return f"timezone('UTC', CAST({col} AS TIMESTAMP))"
    return f"TRY_CAST({col} AS TIMESTAMPTZ)"


def instant_order(column: str, column_type: str) -> str:
    """The time column as something that orders rows by their instant, cheaply: a timestamp as it is
    (to the microsecond, as on Spark), a string parsed as `instant_expr` parses it."""
    if column_type in ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"):
        return ident(column)
    if column_type in TIMESTAMP_TYPES:
        return f"CAST({ident(column)} AS TIMESTAMP)"
    return instant_expr(column, column_type)


def local_date_expr(instant: str, timezone: str) -> str:
    return f"CAST(timezone({literal(timezone)}, {instant}) AS DATE)"


def _instant_literal(column_type: str, day: dt.date) -> str:
    """Midnight UTC of `day`, as a literal comparable with a time column of `column_type`."""
    if column_type == "TIMESTAMP WITH TIME ZONE":
        return f"TIMESTAMPTZ '{day.isoformat()} 00:00:00+00'"
    return f"TIMESTAMP '{day.isoformat()} 00:00:00'"


def time_bound(column: str, column_type: str, first_day: dt.date, last_day: dt.date) -> str | None:
    """A filter on the raw time column that keeps every row whose local date can fall in
    [first_day, last_day], in any timezone (offsets stay within a day), so that readers skip row
    groups and files by their statistics. None for a string column: it cannot be bounded unparsed."""
    if column_type not in TIMESTAMP_TYPES:
        return None
    low, high = first_day - dt.timedelta(days=1), last_day + dt.timedelta(days=2)
    return (f"{ident(column)} >= {_instant_literal(column_type, low)}"
            f" AND {ident(column)} < {_instant_literal(column_type, high)}")


def maybe_outside(relation: str, column: str, column_type: str, start: dt.date, end: dt.date | None) -> str:
    """The rows of `relation` whose local date may fall outside [start, end], or that have no time:
    all but those at least a day inside it, which no timezone moves out (offsets stay within a day),
    so that counting the rows outside converts the few near or beyond its edges, not every row. The
    whole relation for a string column (it cannot be bounded unparsed)."""
    if column_type not in TIMESTAMP_TYPES:
        return relation
    inside = f"{ident(column)} >= {_instant_literal(column_type, start + dt.timedelta(days=1))}" + (
        f" AND {ident(column)} < {_instant_literal(column_type, end)}" if end else "")
    return f"(SELECT * FROM {relation} WHERE NOT coalesce({inside}, FALSE))"


def stage_select(
    relation: str, user_column: str, time_column: str, other_columns: list[str], time_type: str, timezone: str,
    first_day: dt.date, last_day: dt.date, window: tuple[dt.date, dt.date | None] | None = None,
) -> str:
    """The source rows whose local date falls in [first_day, last_day], renamed to the contract,
    read through the time bound when the column has one.

    With `window` (start_date, end_date) the whole source is read instead, and the rows that can
    never be activity (no time, an unparseable one, a local date outside the window) are staged too,
    so that one scan both counts them source-wide and serves every day of the range.
    """
    local = local_date_expr(instant_expr(time_column, time_type), timezone)
    others = "".join(f",\n                {ident(c)}" for c in other_columns)
    days = f"period_start BETWEEN {date_lit(first_day)} AND {date_lit(last_day)}"
    if window is None:
        bound = time_bound(time_column, time_type, first_day, last_day)
        read = f"(SELECT * FROM {relation} WHERE {bound})" if bound else relation
        keep = days
    else:
        start, end = window
        read = relation
        keep = f"{days} OR period_start IS NULL OR period_start < {date_lit(start)}" + (
            f" OR period_start > {date_lit(end)}" if end else "")
    return f"""
        SELECT * FROM (
            SELECT
                {local} AS period_start,
                {ident(user_column)} AS user_id,
                {ident(time_column)} AS occurred_at,
                {local} AS activity_date{others}
            FROM {read}
        ) AS source_rows
        WHERE {keep}
    """


def stage_profile(start_date: dt.date, end_date: dt.date | None, stage: str = "fact_stage") -> str:
    """Source-wide counts of the rows that can never be activity, from a stage of the whole source."""
    after_end = f"count(*) FILTER (WHERE period_start > {date_lit(end_date)})" if end_date else "0"
    return f"""
        SELECT
            count(*) FILTER (WHERE occurred_at IS NULL) AS null_occurred_at,
            count(*) FILTER (WHERE occurred_at IS NOT NULL AND period_start IS NULL) AS unparseable_occurred_at,
            count(*) FILTER (WHERE period_start < {date_lit(start_date)}) AS before_start_date,
            {after_end} AS after_end_date
        FROM {stage}
    """


def unparseable_in_source(relation: str, time_column: str, limit: int = 3) -> str:
    """Over the whole source: the string values of the time column that do not parse as the fact step
    parses them (`instant_expr`), counted, and a few of them."""
    bad = f"{ident(time_column)} IS NOT NULL AND {instant_expr(time_column, 'VARCHAR')} IS NULL"
    return f"""
        SELECT count(*), list(DISTINCT {ident(time_column)})[1:{limit}]
        FROM (SELECT {ident(time_column)} FROM {relation} WHERE {bad}) AS unparseable
    """


def unparseable_examples_in(stage: str = "fact_stage", limit: int = 3) -> str:
    return f"""
        SELECT DISTINCT CAST(occurred_at AS VARCHAR) AS value FROM {stage}
        WHERE occurred_at IS NOT NULL AND period_start IS NULL LIMIT {limit}
    """


def stage_day_counts(
    first_day: dt.date, last_day: dt.date, other_columns: list[str], stage: str = "fact_stage",
) -> str:
    """Per local day: rows read, rows without a user (duplicates are what the insert then drops),
    and the fingerprint of the rows read: an order-independent sum of row hashes, so that a row
    added, removed, corrected or moved to another day changes the day's (rows_read, fingerprint)."""
    columns = ", ".join(ident(c) for c in ("user_id", "occurred_at", *other_columns))
    return f"""
        SELECT period_start, count(*) AS rows_read, count(*) FILTER (WHERE user_id IS NULL) AS null_user_id,
            CAST(sum(CAST(hash({columns}) AS DECIMAL(38, 0))) % {HASH_MODULUS} AS BIGINT) AS fingerprint
        FROM {stage}
        WHERE period_start BETWEEN {date_lit(first_day)} AND {date_lit(last_day)}
        GROUP BY period_start
    """


def rows_fingerprint(table: str, columns: list[str], periods: list[dt.date]) -> str:
    """Per partition of `periods`: its rows and their order-independent hash (as `stage_day_counts`)."""
    hashed = ", ".join(ident(c) for c in columns)
    return f"""
        SELECT period_start, count(*),
            CAST(sum(CAST(hash({hashed}) AS DECIMAL(38, 0))) % {HASH_MODULUS} AS BIGINT)
        FROM {ident(table)} WHERE {in_periods(periods)}
        GROUP BY period_start
    """


def fact_difference(fact: str, stage: str, columns: list[str], days: list[dt.date]) -> str:
    """Per fact day: the fact rows the staged source rows would add and remove (as multisets)."""
    names = ", ".join(ident(c) for c in columns)
    within = f"period_start IN ({', '.join(date_lit(d) for d in days)})"
    return f"""
        WITH now_rows AS (SELECT DISTINCT {names} FROM {stage} WHERE user_id IS NOT NULL AND {within}),
        was_rows AS (SELECT {names} FROM {ident(fact)} WHERE {within}),
        added AS (SELECT {names} FROM now_rows EXCEPT ALL SELECT {names} FROM was_rows),
        removed AS (SELECT {names} FROM was_rows EXCEPT ALL SELECT {names} FROM now_rows)
        SELECT period_start, sum(added) AS added, sum(removed) AS removed FROM (
            SELECT period_start, 1 AS added, 0 AS removed FROM added
            UNION ALL SELECT period_start, 0 AS added, 1 AS removed FROM removed
        ) AS changed
        GROUP BY period_start
    """


def rows_per_period(table: str, first: dt.date, last: dt.date) -> str:
    return f"""
        SELECT period_start, count(*) AS rows FROM {ident(table)}
        WHERE period_start BETWEEN {date_lit(first)} AND {date_lit(last)}
        GROUP BY period_start
    """


def fact_select(days: Sequence[dt.date], stage: str = "fact_stage") -> str:
    """The valid rows of the days (a user, and a local date among them), exact duplicates once."""
    return f"""
        SELECT DISTINCT * FROM {stage}
        WHERE user_id IS NOT NULL AND {in_periods(days)}
        ORDER BY period_start, user_id, occurred_at
    """


def in_periods(periods: Sequence[dt.date]) -> str:
    """A predicate on period_start: one of `periods` (one partition: an equality)."""
    periods = sorted(set(periods))
    if len(periods) == 1:
        return f"period_start = {date_lit(periods[0])}"
    return f"period_start IN ({values_list(tuple(periods))})"


def delete_range(table: str, first: dt.date, last: dt.date) -> str:
    return f"DELETE FROM {ident(table)} WHERE period_start BETWEEN {date_lit(first)} AND {date_lit(last)}"


# --- FirstLast, activation, transitions ---------------------------------------------------------


# Shifting keeps bits 0..61 (this mask) and moves them up by one: bit 62 is the oldest day kept.
SHIFT_MASK = 2 ** (BITS_KEPT - 1) - 1


def create_table(
    table: str, columns: Sequence[Column], duckdb_storage: bool = False, key: Sequence[str] = (),
    nullable: bool = False,
) -> str:
    """DDL of a relation's columns (`tables`), in DuckDB's dialect: with `duckdb_storage`, DuckDB's
    compression choices too; `key`, its primary key; `nullable`, no NOT NULL (an engine that does
    not enforce it). Spark renders it without the storage and adds its own clause (`engines/spark.py`)."""
    def definition(column: Column) -> str:
        storage = " USING COMPRESSION uncompressed" if duckdb_storage and column.uncompressed else ""
        null = "" if column.nullable or nullable else " NOT NULL"
        return f"{ident(column.name)} {column.type}{null}{storage}"

    body = ",\n            ".join([*map(definition, columns), *([f"PRIMARY KEY ({', '.join(key)})"] if key else [])])
    return f"CREATE TABLE IF NOT EXISTS {ident(table)} (\n            {body}\n        )"


def active_users(fact: str, period: dt.date, next_period: dt.date) -> str:
    """Distinct users with at least one valid fact row whose local date lies in the period."""
    return f"""
        SELECT DISTINCT user_id FROM {ident(fact)}
        WHERE period_start >= {date_lit(period)} AND period_start < {date_lit(next_period)}
    """


def latest_text(column: str, instant: str) -> str:
    """The value of `column` as text on the latest row of a group that has one: rows ordered by
    their instant, and rows at the same instant by the value as text (the greatest last). One
    aggregate, the same on both engines (DuckDB's arg_max is Spark's max_by): the value whose
    (instant, value) is the greatest, among the rows with a value."""
    text = f"CAST({ident(column)} AS VARCHAR)"
    return f"arg_max({text}, struct_pack(t := {instant}, v := {text})) FILTER (WHERE {ident(column)} IS NOT NULL)"


def mapped(segment: SegmentConfig, value: str) -> str:
    """A segment's value through its `values:` (the rest become 'other'; null stays null)."""
    if segment.values is None:
        return value
    return f"CASE WHEN {value} IN ({values_list(segment.values)}) THEN {value} WHEN {value} IS NOT NULL THEN 'other' END"


def firstlast_select(
    firstlast: str, fact: str, period: dt.date, previous: dt.date, next_period: dt.date, is_first: bool,
    days_seen_bits: bool = False, segments: Sequence[SegmentConfig] = (), time_type: str = "TIMESTAMP",
) -> str:
    """FirstLast(p) = FirstLast(q) updated with the users active in p (new users are added).

    With `days_seen_bits` (the daily grain), everyone's bits move up a day and bit 0 says whether
    the user is active on p; the day that falls off the end (63 days ago) is dropped.

    With `segments`, each segment N is the latest value of its column among the user's rows of p
    (`latest_text`, mapped through `values:`), else the one of q; prev_N is the one of q for a user
    active in p, null for the others (an inactive user's value of q is N)."""
    p, q = date_lit(period), date_lit(previous)
    prior = "FALSE" if is_first else f"period_start = {q}"
    bits = (f""",
            (coalesce(prior_state.days_seen_bits, 0) & {SHIFT_MASK}) * 2
                + CASE WHEN active.user_id IS NULL THEN 0 ELSE 1 END AS days_seen_bits""" if days_seen_bits else "")
    if segments:
        instant = instant_order("occurred_at", time_type)
        latest = "".join(f", {latest_text(s.column, instant)} AS {ident(s.key)}" for s in segments)
        active = f"""
            SELECT user_id{latest} FROM {ident(fact)}
            WHERE period_start >= {date_lit(period)} AND period_start < {date_lit(next_period)}
            GROUP BY user_id"""
    else:
        active = active_users(fact, period, next_period)
    # prev_N is kept for the period's active users only (an inactive user's is N; most rows are inactive,
    # and a null costs next to nothing to write, where a copy of N costs a string per user and period).
    values = "".join(
        f""",
            coalesce({mapped(s, f"active.{ident(s.key)}")}, prior_state.{ident(s.key)}) AS {ident(s.key)},
            CASE WHEN active.user_id IS NOT NULL THEN prior_state.{ident(s.key)} END
                AS {ident(tables.prev_column(s))}""" for s in segments)
    return f"""
        WITH active AS ({active}),
        prior_state AS (SELECT * FROM {ident(firstlast)} WHERE {prior})
        SELECT
            {p} AS period_start,
            coalesce(prior_state.user_id, active.user_id) AS user_id,
            coalesce(prior_state.first_active_period, {p}) AS first_active_period,
            CASE WHEN active.user_id IS NULL THEN prior_state.last_active_period ELSE {p} END
                AS last_active_period,
            CASE
                WHEN active.user_id IS NULL THEN prior_state.streak_start_period  -- away: unchanged
                WHEN prior_state.last_active_period = {q} THEN prior_state.streak_start_period  -- streak goes on
                ELSE {p}  -- first activity, or a return: a streak starts here
            END AS streak_start_period,
            CASE
                WHEN active.user_id IS NULL OR prior_state.last_active_period = {q}
                    THEN prior_state.prior_active_period
                ELSE prior_state.last_active_period  -- NULL for a new user
            END AS prior_active_period,
            coalesce(prior_state.active_periods, 0) + CASE WHEN active.user_id IS NULL THEN 0 ELSE 1 END
                AS active_periods{bits}{values}
        FROM prior_state FULL OUTER JOIN active ON prior_state.user_id = active.user_id  -- active: the smaller side
    """


def previous_period(grain: Grain, period: str) -> str:
    """The start of the period before the one starting at `period` (a SQL date expression)."""
    step = {Grain.daily: "1 DAY", Grain.weekly: "7 DAY", Grain.monthly: "1 MONTH"}[grain]
    return f"CAST({period} - INTERVAL {step} AS DATE)"




def window_mask(days: int) -> int:
    """The bits of the days [d - days + 1, d]."""
    return 2 ** days - 1


def day_activity(bits: str, days_back: int, week_days: int, month_days: int) -> tuple[str, str, str]:
    """For day e = d - days_back, read off d's bits: (active on e, active on some day of
    [e-W+1, e-1], active on some day of [e-M+1, e-W]), as SQL predicates."""
    week, month = window_mask(week_days), window_mask(month_days)
    masks = (1, week - 1, month - week)
    return tuple(f"{bits} & {mask << days_back} <> 0" for mask in masks)


def engagement_state(activity: tuple[str, str, str], is_new: str) -> str:
    """The engagement state of a day from its three `day_activity` predicates (the contract's table;
    not active on the day, "active in [e-W+1, e]" is the second predicate, and so on)."""
    active, earlier_in_week, in_month_before_week = activity
    return f"""CASE
                WHEN {is_new} THEN 'new'
                WHEN {active} THEN CASE
                    WHEN {earlier_in_week} THEN 'current'
                    WHEN {in_month_before_week} THEN 'reactivated'
                    ELSE 'resurrected' END
                WHEN {earlier_in_week} THEN 'at_risk_wau'
                WHEN {in_month_before_week} THEN 'at_risk_mau'
                ELSE 'dormant'
            END"""


def activation_view(
    firstlast: str, grain: Grain, week_days: int = 7, month_days: int = 28, engagement: bool = True,
    segments: Sequence[SegmentConfig] = (), previous_values: bool = False,
) -> str:
    """The states of every period p, each read off FirstLast(p) alone (see the module docstring):
    the activation relation is this view, so each period writes one per-user snapshot, not two.

    active(p)       <=> last_active_period = p
    active(q)       <=> last_active_period = q, or active(p) with a streak that began before p
    retained(x)     <=> active in x with a streak that began before x (and x is not first(u))

    The daily view adds the rolling engagement states of day d and of d - 1, read off the bits:
    yesterday's bits are today's shifted down a day (M <= 62 keeps yesterday's month in them).
    `engagement=False` leaves them out (the calendar columns only, over a FirstLast without bits).
    Each segment adds its column N as FirstLast holds it; with `previous_values`, prev_N too, the
    value of p-1 (what the segment tables group by; the contract's relation has N only): FirstLast's
    prev_N for a user active in p, N for an inactive one (null for a new one: FirstLast's is null).
    """
    p, q = "period_start", previous_period(grain, "period_start")
    values = "".join(f", {ident(s.key)}" for s in segments)
    if previous_values:
        values += "".join(f""",
            CASE WHEN last_active_period = {p} THEN {ident(tables.prev_column(s))} ELSE {ident(s.key)} END
                AS {ident(tables.prev_column(s))}""" for s in segments)
    between = lambda a, b: periods_between(grain, a, b)  # noqa: E731
    engagement = "" if grain is not Grain.daily or not engagement else f""",
            days_seen_bits,
            {engagement_state(day_activity("days_seen_bits", 0, week_days, month_days), f"first_active_period = {p}")}
                AS engagement_state,
            CASE WHEN first_active_period = {p} THEN NULL ELSE
            {engagement_state(day_activity("days_seen_bits", 1, week_days, month_days), f"first_active_period = {q}")}
            END AS prev_engagement_state"""
    return f"""
        SELECT
            period_start,
            user_id,
            CASE
                WHEN first_active_period = {p} THEN 'new'
                WHEN last_active_period < {p} THEN 'inactive'
                WHEN streak_start_period < {p} THEN 'retained'
                ELSE 'reactivated'
            END AS state,
            CASE
                WHEN first_active_period = {p} THEN NULL
                WHEN first_active_period = {q} THEN 'new'
                WHEN last_active_period < {q} OR streak_start_period = {p} THEN 'inactive'
                WHEN streak_start_period < {q} THEN 'retained'
                ELSE 'reactivated'
            END AS prev_state,
            first_active_period,
            last_active_period,
            CAST(CASE WHEN last_active_period = {p}
                THEN {between('streak_start_period', p)} + 1 ELSE 0 END AS INTEGER) AS streak,
            CAST(CASE WHEN last_active_period = {p}
                THEN 0 ELSE {between('last_active_period', p)} END AS INTEGER) AS inactive_streak,
            CAST(CASE WHEN first_active_period < {p} AND streak_start_period = {p}
                THEN {between('prior_active_period', p)} - 1 END AS INTEGER) AS return_gap,
            active_periods{engagement}{values}
        FROM {ident(firstlast)}
    """


def state_counts_by_period(activation: str, first: dt.date, last: dt.date) -> str:
    """Rows per state and churned users (active in q, inactive in p), for each period of a range."""
    counts = ",\n".join(f"count(*) FILTER (WHERE state = {literal(s)}) AS {s}" for s in STATES)
    return f"""
        SELECT
            period_start,
            count(*) AS users,
            {counts},
            count(*) FILTER (WHERE state = 'inactive' AND prev_state IN {ACTIVE_LIST}) AS churned
        FROM {ident(activation)}
        WHERE period_start BETWEEN {date_lit(first)} AND {date_lit(last)}
        GROUP BY period_start
    """


def periods_relation(periods: Sequence[dt.date]) -> str:
    """The relation `periods(period_start)` of a run's periods: what a statement over a range
    joins with where every period has a row, users or not."""
    rows = ", ".join(f"({date_lit(p)})" for p in sorted(set(periods)))
    return f"SELECT * FROM (VALUES {rows}) AS periods(period_start)"


def summary_tables(behavior: str, grain: Grain) -> list[str]:
    """The tables summed off a period's summary profile (`summary_profile_select`), written together."""
    return [transitions_table(behavior, grain), growth_table(behavior, grain), cohorts_table(behavior, grain),
            distributions_table(behavior, grain)]


def summary_profile_select(activation: str, periods: Sequence[dt.date]) -> str:
    """Each period's activation rows counted per (prev_state, state, cohort, streak bucket, return-gap
    bucket): a few thousand rows a period for any number of users, off which its transitions, growth,
    cohorts and distributions are all summed, so the period's activation rows are read once for the four."""
    return f"""
        SELECT period_start, prev_state, state, first_active_period,
               {_bucket("streak")[0]} AS streak_bucket, {_bucket("return_gap")[0]} AS return_gap_bucket,
               count(*) AS users
        FROM {ident(activation)}
        WHERE {in_periods(periods)}
        GROUP BY ALL
    """


def _users(where: str = "TRUE") -> str:
    """The users of a summary profile's rows for which `where` holds (0 if none)."""
    return f"CAST(coalesce(sum(users) FILTER (WHERE {where}), 0) AS BIGINT)"


def transitions_select(profile: str) -> str:
    """Users per (prev_state, state) of each period: the activation rows grouped by the pair."""
    return f"""
        SELECT period_start, prev_state AS from_state, state AS to_state, {_users()} AS users
        FROM {ident(profile)}
        GROUP BY period_start, prev_state, state
        ORDER BY period_start, from_state NULLS FIRST, to_state
    """


# --- growth accounting, cohorts, distributions (all read one activation partition) ----------------

GROWTH_COLUMNS = tables.GROWTH.names()[1:]  # the numbers of a period's growth row


def growth_table(behavior: str, grain: Grain | str) -> str:
    return tables.GROWTH.table(behavior, grain)


def cohorts_table(behavior: str, grain: Grain | str) -> str:
    return tables.COHORTS.table(behavior, grain)


def distributions_table(behavior: str, grain: Grain | str) -> str:
    return tables.DISTRIBUTIONS.table(behavior, grain)


def growth_select(profile: str, periods: Sequence[dt.date]) -> str:
    """Growth accounting of each period: active(p) = new + retained + reactivated, and
    active(p-1) = retained + churned, read off prev_state (every user of p-1 is still a row in p).
    Every period has its row, zeros before its first user."""
    active = ACTIVE_LIST
    counts = {
        "active": f"state IN {active}", "new": "state = 'new'", "retained": "state = 'retained'",
        "reactivated": "state = 'reactivated'", "churned": f"state = 'inactive' AND prev_state IN {active}",
        "dormant": "state = 'inactive' AND prev_state = 'inactive'", "users_ever": "TRUE",
        "active_prev": f"prev_state IN {active}",
    }
    return f"""
        WITH counts AS (
            SELECT period_start,
                   {", ".join(f"{_users(when)} AS {name}" for name, when in counts.items())}
            FROM {ident(profile)}
            GROUP BY period_start
        ),
        filled AS (
            SELECT periods.period_start, {", ".join(f"coalesce(counts.{n}, 0) AS {n}" for n in counts)}
            FROM ({periods_relation(periods)}) AS periods LEFT JOIN counts ON counts.period_start = periods.period_start
        )
        SELECT period_start, active, new, retained, reactivated, churned, dormant, users_ever, active_prev,
               new + reactivated - churned AS active_change,
               retained / nullif(active_prev, 0) AS retention_rate,
               (new + reactivated) / nullif(churned, 0) AS quick_ratio
        FROM filled
        ORDER BY period_start
    """


def cohorts_select(profile: str, grain: Grain) -> str:
    """One row per cohort (first active period) at its age in p: the diagonal of the retention
    triangle that period p adds. Cohort sizes never shrink: users are never dropped."""
    return f"""
        SELECT period_start, first_active_period AS cohort,
               CAST({periods_between(grain, 'first_active_period', 'period_start')} AS INTEGER) AS age,
               {_users()} AS cohort_size,
               {_users(f"state IN {ACTIVE_LIST}")} AS active_users,
               {_users(f"state IN {ACTIVE_LIST}")} / {_users()} AS retention
        FROM {ident(profile)}
        GROUP BY period_start, first_active_period
        ORDER BY period_start, cohort
    """


def _bucket(column: str) -> tuple[str, str]:
    """The start of `column`'s bucket and its label (null below the first bucket)."""
    starts = [start for start, _ in BUCKETS]
    start = "CASE " + " ".join(f"WHEN {column} >= {s} THEN {s}" for s in reversed(starts)) + " END"
    label = "CASE " + " ".join(f"WHEN {column} >= {s} THEN {literal(name)}" for s, name in reversed(BUCKETS)) + " END"
    return start, label


def distributions_select(profile: str) -> str:
    """Bucketed return gaps of each period's reactivated users and streaks of its active users
    (streak >= 1: the profile's streak bucket, null for a streak of 0); a bucket's label is read off
    its start."""
    return f"""
        SELECT period_start, 'return_gap' AS measure, {_bucket("return_gap_bucket")[1]} AS bucket,
               return_gap_bucket AS bucket_start, {_users()} AS users
        FROM {ident(profile)} WHERE state = 'reactivated' GROUP BY ALL
        UNION ALL
        SELECT period_start, 'streak', {_bucket("streak_bucket")[1]}, streak_bucket, {_users()}
        FROM {ident(profile)} WHERE streak_bucket IS NOT NULL GROUP BY ALL
        ORDER BY 1, 2, 4
    """


# --- rolling engagement (daily grain; all read one daily activation partition) ----------------------


def engagement_table(behavior: str) -> str:
    return tables.ENGAGEMENT.table(behavior)


def engagement_transitions_table(behavior: str) -> str:
    return tables.ENGAGEMENT_TRANSITIONS.table(behavior)


def stickiness_table(behavior: str) -> str:
    return tables.STICKINESS.table(behavior)




def engagement_select(engagement_transitions: str, periods: Sequence[dt.date]) -> str:
    """One row for each day d, summed off the day's engagement transitions (every user of d is in
    one (yesterday's state, today's state) pair, and the states say who is active when): users per
    state; DAU (active on d: the active states), WAU (active in [d-W+1, d]: also at_risk_wau), MAU
    (also at_risk_mau); the ratios; and per state of yesterday, the share of its users active on d.
    A day without users has its row of zeros."""
    states = ",\n                   ".join(
        f"coalesce(sum(users) FILTER (WHERE to_state = {literal(s)}), 0) AS {ident(s)}" for s in ENGAGEMENT_STATES)
    rates = ",\n                   ".join(
        f"max(rate) FILTER (WHERE from_state = {literal(s)}) AS {rate}" for rate, s in RETENTION_RATES)
    active = "(" + ", ".join(literal(s) for s in ENGAGEMENT_ACTIVE) + ")"
    dau = " + ".join(ident(s) for s in ENGAGEMENT_ACTIVE)
    return f"""
        WITH days AS (
            SELECT periods.period_start, t.from_state, t.to_state, t.users
            FROM ({periods_relation(periods)}) AS periods
            LEFT JOIN {ident(engagement_transitions)} AS t ON t.period_start = periods.period_start
        ),
        states AS (
            SELECT period_start, {states}
            FROM days GROUP BY period_start
        ),
        retention AS (
            SELECT period_start, from_state,
                   coalesce(sum(users) FILTER (WHERE to_state IN {active}), 0) / sum(users) AS rate
            FROM days WHERE from_state IS NOT NULL GROUP BY period_start, from_state
        ),
        rates AS (
            SELECT period_start, {rates}
            FROM retention GROUP BY period_start
        ),
        windows AS (
            SELECT *, {dau} AS dau, {dau} + at_risk_wau AS wau, {dau} + at_risk_wau + at_risk_mau AS mau
            FROM states
        )
        SELECT windows.period_start, dau, wau, mau, {", ".join(map(ident, ENGAGEMENT_STATES))},
               mau + dormant AS users_ever, dau / nullif(mau, 0) AS dau_mau, wau / nullif(mau, 0) AS wau_mau,
               {", ".join(rate for rate, _ in RETENTION_RATES)}
        FROM windows LEFT JOIN rates ON rates.period_start = windows.period_start
        ORDER BY windows.period_start
    """


def engagement_profile_select(activation: str, periods: Sequence[dt.date], week_days: int, month_days: int) -> str:
    """Each day d's users counted per combination of what their engagement states and stickiness
    are functions of: whether d or d - 1 is their first day; their active days in the week and in
    the month ending on d; and `edge_bits`, their bits of the days d, d - 1, d - W and d - M (what
    the windows ending on d - 1 have that those ending on d have not, and back). A few thousand rows
    a day for any number of users: the engagement transitions and the stickiness are both summed off
    them, so the days' activation rows are read once, grouped by six cheap keys."""
    yesterday = previous_period(Grain.daily, "period_start")
    edges = 1 | 2 | 1 << week_days | 1 << month_days
    return f"""
        SELECT period_start, first_active_period = period_start AS new_today,
               first_active_period = {yesterday} AS new_yesterday,
               days_seen_bits & {edges} AS edge_bits,
               bit_count(days_seen_bits & {window_mask(week_days)}) AS week_days,
               bit_count(days_seen_bits & {window_mask(month_days)}) AS month_days,
               count(*) AS users
        FROM {ident(activation)}
        WHERE {in_periods(periods)}
        GROUP BY ALL
    """


def profile_activity(days_back: int, week_days: int, month_days: int) -> tuple[str, str, str]:
    """`day_activity` of day e = d - days_back (d or d - 1), read off the profile's columns: the
    days [e-W+1, e-1] are the week's [d-W+1, d] less d (and, for d - 1, less d - 1, plus d - W);
    the days [e-M+1, e-W] are the month's less the week's (for d - 1: less d - W, plus d - M)."""
    bit = lambda day: f"(CASE WHEN edge_bits & {1 << day} <> 0 THEN 1 ELSE 0 END)"  # noqa: E731
    if days_back == 0:
        return ("edge_bits & 1 <> 0", f"week_days - {bit(0)} > 0", "month_days - week_days > 0")
    if days_back == 1:
        return ("edge_bits & 2 <> 0", f"week_days - {bit(0)} - {bit(1)} + {bit(week_days)} > 0",
                f"month_days - week_days - {bit(week_days)} + {bit(month_days)} > 0")
    raise ValueError(f"the profile tells d and d - 1 only, not d - {days_back}")


def engagement_transitions_select(profile: str, week_days: int, month_days: int) -> str:
    """Users per (prev_engagement_state, engagement_state) of each day, summed off the days'
    engagement profile: its combinations are named by the view's own CASE (`engagement_state`)."""
    today, yesterday = (profile_activity(back, week_days, month_days) for back in (0, 1))
    return f"""
        SELECT period_start,
               CASE WHEN new_today THEN NULL ELSE {engagement_state(yesterday, "new_yesterday")} END AS from_state,
               {engagement_state(today, "new_today")} AS to_state,
               CAST(sum(users) AS BIGINT) AS users
        FROM {ident(profile)}
        GROUP BY period_start, from_state, to_state
        ORDER BY period_start, from_state NULLS FIRST, to_state
    """


def stickiness_select(profile: str) -> str:
    """Users by their number of active days in the week and in the month ending on each day
    (Amplitude's stickiness), summed off the days' engagement profile; users without an active day
    in a window are not in its rows."""
    return f"""
        SELECT period_start, 'week' AS {ident("window")}, CAST(week_days AS INTEGER) AS active_days,
               CAST(sum(users) AS BIGINT) AS users
        FROM {ident(profile)} WHERE week_days > 0 GROUP BY period_start, week_days
        UNION ALL
        SELECT period_start, 'month', CAST(month_days AS INTEGER), CAST(sum(users) AS BIGINT)
        FROM {ident(profile)} WHERE month_days > 0 GROUP BY period_start, month_days
        ORDER BY 1, 2 DESC, 3
    """


def engagement_tables(behavior: str) -> list[str]:
    """In dependency order: the engagement numbers are summed off the engagement transitions."""
    return [engagement_transitions_table(behavior), engagement_table(behavior), stickiness_table(behavior)]


def reads(behavior: str, grain: Grain, table: str) -> str:
    """The relation a table after activation is computed from (the same period's partition)."""
    if table == engagement_table(behavior):
        return engagement_transitions_table(behavior)
    if table == segment_growth_table(behavior, grain):
        return segment_transitions_table(behavior, grain)
    return activation_table(behavior, grain)


# --- segments (all read one activation partition, through the period's segment profile) -------------


def segment_transitions_table(behavior: str, grain: Grain | str) -> str:
    return tables.SEGMENT_TRANSITIONS.table(behavior, grain)


def segment_growth_table(behavior: str, grain: Grain | str) -> str:
    return tables.SEGMENT_GROWTH.table(behavior, grain)


def segment_engagement_table(behavior: str) -> str:
    return tables.SEGMENT_ENGAGEMENT.table(behavior)


def segment_whole(behavior: str, grain: Grain, table: str) -> str:
    """The layer's table whose numbers a segment table's values add up to (what its checks compare)."""
    return {segment_transitions_table(behavior, grain): transitions_table(behavior, grain),
            segment_growth_table(behavior, grain): growth_table(behavior, grain),
            segment_engagement_table(behavior): engagement_table(behavior)}[table]


def segment_tables(behavior: str, grain: Grain) -> list[str]:
    """In dependency order: the segment growth is summed off the segment transitions."""
    return [r.table(behavior, grain) for r in tables.SEGMENT_RELATIONS if grain in r.grains]


def segment_profile_select(activation: str, periods: Sequence[dt.date], segments: Sequence[SegmentConfig],
                           daily: bool) -> str:
    """The activation rows of `periods` counted per period, segment and (value in p-1, value in p,
    prev_state, state) — and on the daily grain the engagement state — in one pass for all segments
    (a grouping set per segment): every segment table of those periods is summed off these few rows.
    `activation` is the activation view's SELECT with the previous values
    (`activation_view(previous_values=True)`)."""
    keys = "prev_state, state" + (", engagement_state" if daily else "")
    sets = ", ".join(f"(period_start, {ident(tables.prev_column(s))}, {ident(s.key)}, {keys})" for s in segments)
    def which(column_of) -> str:  # noqa: E306 (the grouping set a row comes from names its segment)
        return "CASE " + " ".join(f"WHEN grouping({ident(s.key)}) = 0 THEN {column_of(s)}" for s in segments) + " END"
    return f"""
        SELECT period_start, {which(lambda s: literal(s.key))} AS segment,
               {which(lambda s: ident(tables.prev_column(s)))} AS prev_value,
               {which(lambda s: ident(s.key))} AS value,
               {keys}, count(*) AS users
        FROM ({activation}) AS activation
        WHERE period_start IN ({values_list(tuple(periods))})
        GROUP BY GROUPING SETS ({sets})
    """


def segment_values_seen(profile: str) -> str:
    """Per period and segment, the distinct non-null values (what `max_values` bounds), the most first."""
    return (f"SELECT period_start, segment, count(DISTINCT value) AS n FROM {profile}"
            " GROUP BY period_start, segment ORDER BY n DESC, period_start")


def segment_transitions_select(profile: str) -> str:
    return f"""
        SELECT period_start, segment, prev_value, value, prev_state AS from_state,
               state AS to_state, CAST(sum(users) AS BIGINT) AS users
        FROM {profile}
        GROUP BY period_start, segment, prev_value, value, prev_state, state
        ORDER BY period_start, segment, value NULLS FIRST, prev_value NULLS FIRST, from_state NULLS FIRST, to_state
    """


def segment_growth_select(segment_transitions: str, periods: Sequence[dt.date]) -> str:
    """Growth accounting per (segment, value), summed off each period's segment transitions: the
    users with the value in p (active, new, retained, reactivated, dormant, every user, and the
    retained users who came from another value), joined null-safely with the users active in p-1
    with the value then (active_prev, churned, and the retained users who left for another value)."""
    active = ACTIVE_LIST
    moved = "to_state = 'retained' AND prev_value IS DISTINCT FROM value"
    def total(condition: str) -> str:  # noqa: E306
        return f"CAST(coalesce(sum(users) FILTER (WHERE {condition}), 0) AS BIGINT)"
    return f"""
        WITH t AS (
            SELECT period_start, segment, prev_value, value, from_state, to_state, users
            FROM {ident(segment_transitions)} WHERE {in_periods(periods)}
        ),
        now AS (
            SELECT period_start, segment, value,
                   {total(f"to_state IN {active}")} AS active,
                   {total("to_state = 'new'")} AS new,
                   {total("to_state = 'retained'")} AS retained,
                   {total("to_state = 'reactivated'")} AS reactivated,
                   {total("to_state = 'inactive' AND from_state = 'inactive'")} AS dormant,
                   CAST(sum(users) AS BIGINT) AS users_ever,
                   {total(moved)} AS moved_in
            FROM t GROUP BY period_start, segment, value
        ),
        before AS (
            SELECT period_start, segment, prev_value AS value,
                   CAST(sum(users) AS BIGINT) AS active_prev,
                   {total("to_state = 'inactive'")} AS churned,
                   {total(moved)} AS moved_out
            FROM t WHERE from_state IN {active} GROUP BY period_start, segment, prev_value
        ),
        counts AS (
            SELECT coalesce(now.period_start, before.period_start) AS period_start,
                   coalesce(now.segment, before.segment) AS segment,
                   CASE WHEN now.segment IS NULL THEN before.value ELSE now.value END AS value,
                   coalesce(now.active, 0) AS active, coalesce(now.new, 0) AS new,
                   coalesce(now.retained, 0) AS retained, coalesce(now.reactivated, 0) AS reactivated,
                   coalesce(before.churned, 0) AS churned, coalesce(now.dormant, 0) AS dormant,
                   coalesce(now.users_ever, 0) AS users_ever, coalesce(before.active_prev, 0) AS active_prev,
                   coalesce(now.moved_in, 0) AS moved_in, coalesce(before.moved_out, 0) AS moved_out
            FROM now FULL OUTER JOIN before
              ON now.period_start = before.period_start AND now.segment = before.segment
             AND now.value IS NOT DISTINCT FROM before.value
        )
        SELECT period_start, segment, value, active, new, retained, reactivated, churned, dormant,
               users_ever, active_prev, moved_in, moved_out, active - active_prev AS active_change,
               (active_prev - churned) / nullif(active_prev, 0) AS retention_rate,
               (new + reactivated + moved_in) / nullif(churned + moved_out, 0) AS quick_ratio
        FROM counts
        ORDER BY period_start, segment, value NULLS FIRST
    """


def segment_engagement_select(profile: str) -> str:
    """DAU, WAU, MAU and users per engagement state, per (segment, value) of each day d, summed off
    the days' segment profile."""
    states = ",\n               ".join(
        f"CAST(coalesce(sum(users) FILTER (WHERE engagement_state = {literal(s)}), 0) AS BIGINT) AS {ident(s)}"
        for s in ENGAGEMENT_STATES)
    dau = " + ".join(ident(s) for s in ENGAGEMENT_ACTIVE)
    return f"""
        WITH counts AS (
            SELECT period_start, segment, value, CAST(sum(users) AS BIGINT) AS users_ever,
               {states}
            FROM {profile} GROUP BY period_start, segment, value
        )
        SELECT period_start, segment, value, {dau} AS dau, {dau} + at_risk_wau AS wau,
               {dau} + at_risk_wau + at_risk_mau AS mau, users_ever, {", ".join(map(ident, ENGAGEMENT_STATES))}
        FROM counts
        ORDER BY period_start, segment, value NULLS FIRST
    """


# --- the growth model (daily): inputs read off the engagement tables, outputs written as VALUES ----


def forecast_tables(behavior: str) -> list[str]:
    """In the order they are written: the accuracy reads the forecasts."""
    return tables.forecast_tables(behavior)


def window_transitions(engagement_transitions: str, first: dt.date, last: dt.date) -> str:
    """The engagement transitions between engagement states (not the entries into new) of days
    first .. last: what the rates of the days whose windows they fall in are summed from."""
    return (f"SELECT period_start, from_state, to_state, users FROM {ident(engagement_transitions)}"
            f" WHERE period_start BETWEEN {date_lit(first)} AND {date_lit(last)} AND from_state IS NOT NULL")


def window_engagement(engagement: str, first: dt.date, last: dt.date) -> str:
    """Each day's state counts and users_ever: the inflow's days and the projection's start."""
    names = ", ".join(ident(c) for c in (*ENGAGEMENT_STATES, "users_ever"))
    return (f"SELECT period_start, {names} FROM {ident(engagement)}"
            f" WHERE period_start BETWEEN {date_lit(first)} AND {date_lit(last)}")


def double_lit(value: float) -> str:
    """A DOUBLE literal on both engines (a plain 0.25 would be a DECIMAL)."""
    text = repr(float(value))
    return text if "e" in text else f"{text}e0"


def accuracy_select(forecast: str, engagement: str, periods: Sequence[dt.date],
                    horizons: Sequence[int] = tables.ACCURACY_HORIZONS) -> str:
    """For each day d of `periods` and horizon h whose baseline forecast made on d - h is stored:
    that forecast of d's dau, wau and mau against the engagement table's."""
    measured = "\n            UNION ALL\n".join(
        f"SELECT period_start, horizon, {literal(m)} AS measure, forecast_{m} AS forecast, actual_{m} AS actual"
        f" FROM paired" for m in ("dau", "wau", "mau"))
    return f"""
        WITH paired AS (
            SELECT e.period_start, f.horizon,
                   f.dau AS forecast_dau, f.wau AS forecast_wau, f.mau AS forecast_mau,
                   e.dau AS actual_dau, e.wau AS actual_wau, e.mau AS actual_mau
            FROM {ident(forecast)} AS f
            JOIN {ident(engagement)} AS e ON e.period_start = f.day
            WHERE f.scenario = 'baseline' AND f.horizon IN ({", ".join(map(str, horizons))})
              AND f.day BETWEEN {date_lit(min(periods))} AND {date_lit(max(periods))}
        ), measured AS (
            {measured}
        )
        SELECT period_start, horizon, measure, forecast, actual, forecast - actual AS error,
               CASE WHEN actual = 0 THEN NULL ELSE (forecast - actual) / actual END AS relative_error
        FROM measured"""
