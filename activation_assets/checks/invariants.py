"""The contract's invariants as SQL, evaluated for each partition a run writes.

Each check is a query that counts violations for one period `p` (with its predecessor `q`, when `p`
is not the first period) and, when there are any, a query for a few example rows. A run over a
range evaluates every partition and reports one result per check that says which partitions it
covered and which failed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from activation_assets.models import sql
from activation_assets.config import BehaviorConfig, Grain
from activation_assets.periods import first_period, periods_for
from activation_assets.models.sql import date_lit, ident, literal
from activation_assets.engines import Warehouse, as_warehouse
from activation_assets.models import forecast as growth

ACTIVE = sql.ACTIVE_LIST


def _impossible_transition() -> str:
    """A row whose (prev_state -> state) is none of the nine, as a CASE on prev_state (building the
    pair as a string cost a third of the activation checks' shared pass)."""
    allowed: dict[str | None, list[str]] = {}
    for before, after in sql.TRANSITIONS:
        allowed.setdefault(before, []).append(after)
    return (f"NOT coalesce(CASE WHEN prev_state IS NULL THEN state IN ({sql.values_list(allowed.pop(None))}) "
            + " ".join(f"WHEN prev_state = {literal(before)} THEN state IN ({sql.values_list(after)})"
                       for before, after in allowed.items()) + " END, FALSE)")


IMPOSSIBLE_TRANSITION = _impossible_transition()
FOUR_STATES = f"({sql.values_list(sql.STATES)})"
EXAMPLE_ROWS = 5


@dataclass(frozen=True)
class Period:
    """The period being checked and the names it is checked against."""

    behavior: BehaviorConfig
    grain: Grain
    start: dt.date
    previous: dt.date | None  # None for the first period of the grain
    time_type: str = "TIMESTAMP WITH TIME ZONE"  # the fact's occurred_at, as the source has it

    @property
    def p(self) -> str:
        return date_lit(self.start)

    @property
    def q(self) -> str:
        # A first period has no predecessor: compare with an empty one.
        return date_lit(self.previous) if self.previous else "NULL"

    @property
    def next(self) -> str:
        return date_lit(periods_for(self.behavior, self.grain).next(self.start))

    @property
    def first_day(self) -> str:
        """The period's first day within [start_date, end_date]."""
        return date_lit(max(self.start, self.behavior.start_date))

    @property
    def last_day(self) -> str:
        """The period's last day within [start_date, end_date]."""
        last = periods_for(self.behavior, self.grain).last_day(self.start)
        return date_lit(min(last, self.behavior.end_date) if self.behavior.end_date else last)

    @property
    def fact(self) -> str:
        return ident(sql.fact_table(self.behavior.name))

    @property
    def firstlast(self) -> str:
        return ident(sql.firstlast_table(self.behavior.name, self.grain))

    @property
    def activation(self) -> str:
        return ident(sql.activation_table(self.behavior.name, self.grain))

    @property
    def transitions(self) -> str:
        return ident(sql.transitions_table(self.behavior.name, self.grain))

    @property
    def growth(self) -> str:
        return ident(sql.growth_table(self.behavior.name, self.grain))

    @property
    def cohorts(self) -> str:
        return ident(sql.cohorts_table(self.behavior.name, self.grain))

    @property
    def engagement(self) -> str:
        return ident(sql.engagement_table(self.behavior.name))

    @property
    def engagement_transitions(self) -> str:
        return ident(sql.engagement_transitions_table(self.behavior.name))

    @property
    def stickiness(self) -> str:
        return ident(sql.stickiness_table(self.behavior.name))

    @property
    def segment_transitions(self) -> str:
        return ident(sql.segment_transitions_table(self.behavior.name, self.grain))

    @property
    def segment_growth(self) -> str:
        return ident(sql.segment_growth_table(self.behavior.name, self.grain))

    @property
    def segment_engagement(self) -> str:
        return ident(sql.segment_engagement_table(self.behavior.name))

    @property
    def forecast(self) -> str:
        return ident(sql.forecast_tables(self.behavior.name)[0])

    @property
    def forecast_rates(self) -> str:
        return ident(sql.forecast_tables(self.behavior.name)[1])

    @property
    def forecast_accuracy(self) -> str:
        return ident(sql.forecast_tables(self.behavior.name)[2])

    @property
    def scenario_factors(self) -> str:
        """The relation `factors(scenario, factor)`: each scenario's factor on the inflow."""
        rows = ", ".join(f"({literal(s.name)}, {sql.double_lit(s.new_users)})" for s in growth.scenarios(self.behavior))
        return f"SELECT * FROM (VALUES {rows}) AS factors(scenario, factor)"

    @property
    def segment_names(self) -> str:
        """The relation `segments(segment)` of the behavior's segment names."""
        names = ", ".join(f"({literal(s.key)})" for s in self.behavior.segments)
        return f"SELECT * FROM (VALUES {names}) AS segments(segment)"

    def window_start(self, days: int) -> str:
        """The first day of the rolling window of `days` days that ends on this (daily) period."""
        return date_lit(window_first_day(self.start, days))


SqlFor = Callable[[Period], str]


def window_first_day(day: dt.date, days: int) -> dt.date:
    """The first day of the rolling window of `days` days that ends on `day`."""
    return day - dt.timedelta(days=days - 1)


@dataclass(frozen=True)
class Span:
    """Consecutive partitions checked together: each period with its predecessor (None for the first
    of the grain) and its successor, as the SQL relation `span(p, q, nxt)`."""

    behavior: BehaviorConfig
    grain: Grain
    periods: tuple[dt.date, ...]

    def _context(self, period: dt.date) -> Period:
        return period_context(self.behavior, self.grain, period)

    @property
    def values(self) -> str:
        rows = []
        for period in self.periods:
            c = self._context(period)
            rows.append(f"({c.p}, {'CAST(NULL AS DATE)' if c.previous is None else c.q}, {c.next})")
        return "SELECT * FROM (VALUES " + ", ".join(rows) + ") AS span(p, q, nxt)"

    @property
    def first(self) -> str:
        return date_lit(self.periods[0])

    @property
    def last(self) -> str:
        return date_lit(self.periods[-1])

    @property
    def end(self) -> str:
        """The start of the period after the last one."""
        return self._context(self.periods[-1]).next

    @property
    def lowest(self) -> str:
        """The first period's predecessor (or itself): what a comparison with p - 1 reads from."""
        previous = self._context(self.periods[0]).previous
        return date_lit(previous or self.periods[0])

    @property
    def days(self) -> str:
        """The relation `days(day, p)`: each day of the span's periods (an equality join, where
        the range join on `span` cost three times as much)."""
        calendar = periods_for(self.behavior, self.grain)
        rows = []
        for period in self.periods:
            day, end = period, calendar.next(period)
            while day < end:
                rows.append(f"({date_lit(day)}, {date_lit(period)})")
                day += dt.timedelta(days=1)
        return "SELECT * FROM (VALUES " + ", ".join(rows) + ") AS days(day, p)"

    @property
    def _bit_of(self) -> dict[dt.date, int]:
        """A bit for each period read: the span's and their predecessors' (at most 62 of them)."""
        read = sorted({*self.periods, *(q for q in map(self._previous, self.periods) if q is not None)})
        assert len(read) < 63, "a span's bits are one BIGINT"
        return {period: 1 << i for i, period in enumerate(read)}

    def _previous(self, period: dt.date) -> dt.date | None:
        return self._context(period).previous

    @property
    def bits(self) -> str:
        """The relation `bits(period, bit, in_span)` of every period read."""
        rows = ", ".join(f"({date_lit(period)}, {bit}, {'TRUE' if period in self.periods else 'FALSE'})"
                         for period, bit in self._bit_of.items())
        return f"SELECT * FROM (VALUES {rows}) AS bits(period, bit, in_span)"

    @property
    def bit_pairs(self) -> str:
        """The relation `bit_pairs(p, p_bit, q_bit)`: each period's bit and its predecessor's (0 for none)."""
        bit_of = self._bit_of
        rows = ", ".join(f"({date_lit(p)}, {bit_of[p]}, {bit_of.get(self._previous(p), 0)})" for p in self.periods)
        return f"SELECT * FROM (VALUES {rows}) AS bit_pairs(p, p_bit, q_bit)"

    @property
    def span_bits(self) -> int:
        return sum(bit for period, bit in self._bit_of.items() if period in self.periods)

    @property
    def all_bits(self) -> int:
        return sum(self._bit_of.values())

    def __getattr__(self, name: str) -> str:  # the table names, as for one period
        return getattr(Period(self.behavior, self.grain, self.periods[0], None), name)


SpanSqlFor = Callable[[Span], str]


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    violations: SqlFor  # -> one row: (violations BIGINT, detail VARCHAR)
    examples: SqlFor | None = None
    grains: tuple[Grain, ...] = tuple(Grain)
    # The same check over a span of partitions in one pass (rows: period_start, violations, detail;
    # a period without a row has none), reading the shared relations named in `shared`.
    over_span: SpanSqlFor | None = None
    shared: tuple[str, ...] = ()
    reads_time: bool = False  # orders the fact's rows by instant (needs the type of occurred_at)


# --- FirstLast -----------------------------------------------------------------------------------

# The set checks over a span (one row per user, nobody dropped) read each user's periods once: per
# user id (a null id is one more), its rows in the span's own periods and the bits (`Span.bits`) of
# the periods it has a row in. A user with no period twice has as many rows as span bits; a user
# never dropped has every bit from its first one on. Only the users failing either are read again,
# so a clean span costs one grouped pass instead of a distinct count and an EXCEPT per partition.

def _user_periods(relation: str) -> SpanSqlFor:
    return lambda c: f"""
        SELECT r.user_id, count(*) FILTER (WHERE bits.in_span) AS rows, bit_or(bits.bit) AS seen
        FROM {getattr(c, relation)} AS r JOIN ({c.bits}) AS bits ON r.period_start = bits.period
        WHERE r.period_start BETWEEN {c.lowest} AND {c.last}
        GROUP BY r.user_id"""


def _one_row_per_user_over_span(c: Span, relation: str, users: str) -> str:
    """Per period, the per-partition query's count over the rows of the users in some period twice
    (or null): every other user adds one row and one distinct id, nothing to the difference."""
    return f"""
            SELECT span.p, coalesce(d.duplicated, 0) + coalesce(d.nulls, 0),
                   coalesce(d.duplicated, 0) || ' duplicated rows, ' || coalesce(d.nulls, 0) || ' null user ids'
            FROM span LEFT JOIN (
                SELECT r.period_start, count(*) - count(DISTINCT r.user_id) AS duplicated,
                       count(*) FILTER (WHERE r.user_id IS NULL) AS nulls
                FROM {relation} AS r
                JOIN (SELECT user_id FROM {users}
                      WHERE user_id IS NULL OR rows > bit_count(seen & {c.span_bits})) AS twice
                  ON r.user_id IS NOT DISTINCT FROM twice.user_id
                WHERE r.period_start BETWEEN {c.first} AND {c.last}
                GROUP BY r.period_start) AS d ON d.period_start = span.p"""


def _lost_over_span(c: Span, users: str) -> str:
    """Rows (p, n): the users with a row in p's predecessor and none in p, among those whose bits
    have a gap or stop early (the others cannot have lost a period)."""
    return f"""
                SELECT bit_pairs.p, count(*) AS n
                FROM (SELECT seen FROM {users} WHERE seen <> {c.all_bits} - ((seen & -seen) - 1)) AS u
                JOIN bit_pairs ON (u.seen & bit_pairs.q_bit) <> 0 AND (u.seen & bit_pairs.p_bit) = 0
                GROUP BY bit_pairs.p"""


def _users_missing(c: Period, relation: str, new: str) -> str:
    """One row (n): the users of p-1 with no row in p. Counted only when there can be any: when nobody
    is missing, p's rows other than its new users (`new`) hold p-1's users, as a multiset, which a
    count and a sum of hashes of the ids tell in one scan (an EXCEPT builds a set of every user: 0.11 s
    against 0.03 s for one day at 2M users); when they differ, the set difference counts them."""
    returning = f"period_start = {c.p} AND NOT coalesce({new}, FALSE)"
    return f"""
                SELECT count(*) AS n FROM (
                    WITH differ AS (
                        SELECT count(*) FILTER (WHERE period_start = {c.q}) <> count(*) FILTER (WHERE {returning})
                               OR sum(hash(user_id)) FILTER (WHERE period_start = {c.q})
                                  IS DISTINCT FROM sum(hash(user_id)) FILTER (WHERE {returning}) AS differ
                        FROM {relation} WHERE period_start IN ({c.q}, {c.p}))
                    SELECT user_id FROM {relation} WHERE period_start = {c.q} AND (SELECT differ FROM differ)
                    EXCEPT SELECT user_id FROM {relation} WHERE period_start = {c.p} AND (SELECT differ FROM differ)
                ) AS missing"""


_IN_ORDER = """coalesce(
    first_active_period <= streak_start_period AND streak_start_period <= last_active_period
    AND last_active_period <= period_start AND active_periods >= 1
    AND coalesce(prior_active_period < streak_start_period, first_active_period = streak_start_period),
    FALSE)"""

FIRSTLAST_CHECKS = (
    Check(
        "one_row_per_user",
        "Exactly one FirstLast row per user and period, no null user id.",
        lambda c: f"""
            SELECT count(*) - count(DISTINCT user_id) + count(*) FILTER (WHERE user_id IS NULL),
                   (count(*) - count(DISTINCT user_id)) || ' duplicated rows, '
                   || count(*) FILTER (WHERE user_id IS NULL) || ' null user ids'
            FROM {c.firstlast} WHERE period_start = {c.p}""",
        lambda c: f"""
            SELECT user_id, count(*) AS rows FROM {c.firstlast} WHERE period_start = {c.p}
            GROUP BY user_id HAVING count(*) > 1 OR user_id IS NULL LIMIT {EXAMPLE_ROWS}""",
        over_span=lambda c: _one_row_per_user_over_span(c, c.firstlast, "firstlast_users"),
        shared=("firstlast_users",),
    ),
    Check(
        "nobody_disappears",
        "Every user of the previous partition is still there (users are never dropped).",
        lambda c: f"""
            SELECT n, n || ' users of {c.previous} are missing'
            FROM ({_users_missing(c, c.firstlast, f"first_active_period = {c.p}")}) AS gone""",
        lambda c: f"""
            SELECT user_id FROM {c.firstlast} WHERE period_start = {c.q}
            EXCEPT SELECT user_id FROM {c.firstlast} WHERE period_start = {c.p} LIMIT {EXAMPLE_ROWS}""",
        over_span=lambda c: f"""
            SELECT span.p, coalesce(lost.n, 0), coalesce(lost.n, 0) || ' users of ' || CAST(span.q AS VARCHAR)
                   || ' are missing'
            FROM span LEFT JOIN ({_lost_over_span(c, "firstlast_users")}) AS lost ON lost.p = span.p""",
        shared=("firstlast_users", "bit_pairs"),
    ),
    Check(
        "periods_in_order",
        "first_active_period <= streak_start_period <= last_active_period <= period_start,"
        " prior_active_period < streak_start_period, 1 <= active_periods.",
        lambda c: f"""
            SELECT count(*), count(*) || ' rows with periods out of order'
            FROM {c.firstlast} WHERE period_start = {c.p} AND NOT {_IN_ORDER}""",
        lambda c: f"""
            SELECT * FROM {c.firstlast} WHERE period_start = {c.p} AND NOT {_IN_ORDER} LIMIT {EXAMPLE_ROWS}""",
        over_span=lambda c: f"""
            SELECT span.p, coalesce(f.bad, 0), coalesce(f.bad, 0) || ' rows with periods out of order'
            FROM span LEFT JOIN (
                SELECT period_start, count(*) FILTER (WHERE NOT {_IN_ORDER}) AS bad FROM {c.firstlast}
                WHERE period_start BETWEEN {c.first} AND {c.last} GROUP BY period_start) AS f
            ON f.period_start = span.p""",
    ),
)


# --- activation --------------------------------------------------------------------------------


def _carried_over(now: str, before: str) -> str:
    """Violations and detail when the users of p by previous state (`now`: rows (s, n)) differ from
    the users of p-1 by state (`before`)."""
    return f"""
            WITH now AS ({now}), before AS ({before})
            SELECT coalesce(sum(abs(coalesce(now.n, 0) - coalesce(before.n, 0))), 0),
                   coalesce(string_agg(coalesce(now.s, before.s) || ': ' || coalesce(now.n, 0) || ' vs '
                            || coalesce(before.n, 0), ', ') FILTER (WHERE now.n IS DISTINCT FROM before.n), 'ok')
            FROM now FULL OUTER JOIN before ON now.s = before.s"""


def _carried_over_span(now: str, before: str) -> str:
    """`_carried_over` per period of a span: `now` and `before` are rows (p, s, n)."""
    return f"""
            WITH now AS ({now}), before AS ({before})
            SELECT coalesce(now.p, before.p), sum(abs(coalesce(now.n, 0) - coalesce(before.n, 0))),
                   coalesce(string_agg(coalesce(now.s, before.s) || ': ' || coalesce(now.n, 0) || ' vs '
                            || coalesce(before.n, 0), ', ') FILTER (WHERE now.n IS DISTINCT FROM before.n), 'ok')
            FROM now FULL OUTER JOIN before ON now.p = before.p AND now.s = before.s
            GROUP BY coalesce(now.p, before.p)"""


def _active_count(table: str, period: str) -> str:
    return f"(SELECT count(*) FROM {table} WHERE period_start = {period} AND state IN {ACTIVE})"


_COLUMN_RULES = """
    first_active_period <= last_active_period AND last_active_period <= period_start
    AND (state IN {active}) = (last_active_period = period_start)
    AND (state = 'new') = (first_active_period = period_start)
    AND (state = 'new') = (prev_state IS NULL)
    AND (streak >= 1) = (state IN {active}) AND streak >= 0
    AND (inactive_streak >= 1) = (state = 'inactive') AND inactive_streak >= 0
    AND active_periods >= streak AND active_periods >= 1
    AND (state = 'reactivated') = coalesce(return_gap >= 1, FALSE)
    AND (return_gap IS NULL OR state = 'reactivated')
""".format(active=ACTIVE)

def _ACTIVE_OF(counts: str) -> str:  # noqa: N802 (reads like the column it stands for)
    return f"coalesce({counts}.new + {counts}.retained + {counts}.reactivated, 0)"


def _RETURNING_OF(counts: str) -> str:  # noqa: N802
    return f"coalesce({counts}.retained + {counts}.reactivated, 0)"


def _count(column: str) -> str:
    """A count of a per-period relation joined to the span, 0 for a period it has no row for."""
    return f"coalesce({column}, 0)"


def _counted(c: Span, column: str, what: str) -> str:
    """Per period of the span, the rows of the view that `activation_pair_counts.<column>` counts."""
    return f"""
            SELECT span.p, coalesce(a.{column}, 0), coalesce(a.{column}, 0) || ' {what}'
            FROM span LEFT JOIN activation_pair_counts AS a ON a.period = span.p"""


_USERS_BY_STATE = ", ".join(f"count(*) FILTER (WHERE state = {literal(s)}) AS {s}" for s in sql.STATES)


def _activation_counts(c: Span) -> str:
    """What the other tables' checks compare with the activation view, per period of the span and
    the first one's predecessor: its rows and users by state, the state computed once per row
    (0.045 s for a day of 2M users, where the activation's own pass costs 0.13 s)."""
    return f"""
        SELECT period_start AS period, count(*) AS n, {_USERS_BY_STATE}
        FROM (SELECT period_start, state FROM {c.activation}
              WHERE period_start BETWEEN {c.lowest} AND {c.last}) AS activation_rows
        GROUP BY period_start"""


def _activation_pair_counts(c: Span) -> str:
    """What the activation's own checks count, per period of the span, in one pass over the view:
    rows, users by state and by previous state, churned users, and rows breaking invariants 6 and 7;
    for the first period's predecessor, only what a comparison with p - 1 reads (rows, users by
    state). The rows are grouped by (state, prev_state) first, so each count is a sum over a few
    groups, not a filter over every row (a day of 2M users: 0.17 s instead of 0.37 s for both days)."""
    by_state = ", ".join(f"coalesce(sum(n) FILTER (WHERE state = {literal(s)}), 0) AS {s}" for s in sql.STATES)
    by_previous = ", ".join(f"coalesce(sum(n) FILTER (WHERE prev_state = {literal(s)}), 0) AS prev_{s}"
                            for s in sql.STATES)
    not_read = ", ".join(["NULL"] * (len(sql.STATES) + 3))
    return f"""
        SELECT period_start AS period, sum(n) AS n, {by_state}, {by_previous},
               coalesce(sum(n) FILTER (WHERE state = 'inactive' AND prev_state IN {ACTIVE}), 0) AS churned,
               coalesce(sum(n) FILTER (WHERE {IMPOSSIBLE_TRANSITION}), 0) AS bad_pairs,
               sum(bad_columns) AS bad_columns
        FROM (SELECT period_start, state, prev_state, count(*) AS n,
                     count(*) FILTER (WHERE NOT coalesce({_COLUMN_RULES}, FALSE)) AS bad_columns
              FROM {c.activation} WHERE period_start BETWEEN {c.first} AND {c.last}
              GROUP BY period_start, state, prev_state) AS pairs
        GROUP BY period_start
        UNION ALL
        SELECT period_start, count(*), {_USERS_BY_STATE}, {not_read}
        FROM {c.activation} WHERE period_start = {c.lowest} AND {c.lowest} < {c.first}
        GROUP BY period_start"""


# The relations a span's checks share, computed once per statement (DuckDB materializes a CTE that
# is read more than once).
SHARED: dict[str, SpanSqlFor] = {
    "span": lambda c: c.values, "bit_pairs": lambda c: c.bit_pairs, "activation_counts": _activation_counts,
    "activation_pair_counts": _activation_pair_counts,
    "firstlast_users": _user_periods("firstlast"), "activation_users": _user_periods("activation"),
}

ACTIVATION_CHECKS = (
    Check(
        "one_row_per_user",
        "Invariant 1: exactly one activation row per (user, period); no user id is null.",
        lambda c: f"""
            SELECT count(*) - count(DISTINCT user_id) + count(*) FILTER (WHERE user_id IS NULL),
                   (count(*) - count(DISTINCT user_id)) || ' duplicated rows, '
                   || count(*) FILTER (WHERE user_id IS NULL) || ' null user ids'
            FROM {c.activation} WHERE period_start = {c.p}""",
        lambda c: f"""
            SELECT user_id, count(*) AS rows FROM {c.activation} WHERE period_start = {c.p}
            GROUP BY user_id HAVING count(*) > 1 OR user_id IS NULL LIMIT {EXAMPLE_ROWS}""",
        over_span=lambda c: _one_row_per_user_over_span(c, c.activation, "activation_users"),
        shared=("activation_users",),
    ),
    Check(
        "active_users_match_fact",
        "Invariant 2: new + retained + reactivated = distinct users active in the period, straight from the fact.",
        lambda c: f"""
            WITH a AS (SELECT {_active_count(c.activation, c.p)} AS n),
                 f AS (SELECT count(DISTINCT user_id) AS n FROM {c.fact}
                       WHERE period_start >= {c.p} AND period_start < {c.next})
            SELECT abs(a.n - f.n), 'activation has ' || a.n || ' active users, the fact has ' || f.n
            FROM a, f""",
        over_span=lambda c: f"""
            SELECT span.p, abs({_ACTIVE_OF('a')} - coalesce(f.n, 0)),
                   'activation has ' || {_ACTIVE_OF('a')} || ' active users, the fact has ' || coalesce(f.n, 0)
            FROM span LEFT JOIN activation_pair_counts AS a ON a.period = span.p
            LEFT JOIN (
                SELECT days.p, count(DISTINCT fact.user_id) AS n
                FROM ({c.days}) AS days JOIN {c.fact} AS fact ON fact.period_start = days.day
                WHERE fact.period_start >= {c.first} AND fact.period_start < {c.end}
                GROUP BY days.p) AS f ON f.p = span.p""",
        shared=("activation_pair_counts",),
    ),
    Check(
        "retained_plus_churned_is_previous_active",
        "Invariant 3: retained(p) + churned(p) = active users of p-1.",
        lambda c: f"""
            WITH now AS (
                SELECT count(*) FILTER (WHERE state = 'retained') AS retained,
                       count(*) FILTER (WHERE state = 'inactive' AND prev_state IN {ACTIVE}) AS churned
                FROM {c.activation} WHERE period_start = {c.p}),
            before AS (SELECT {_active_count(c.activation, c.q)} AS active)
            SELECT abs(retained + churned - active),
                   'retained ' || retained || ' + churned ' || churned || ' vs active before ' || active
            FROM now, before""",
        over_span=lambda c: f"""
            SELECT span.p,
                   abs(coalesce(now.retained, 0) + coalesce(now.churned, 0) - {_ACTIVE_OF('before')}),
                   'retained ' || coalesce(now.retained, 0) || ' + churned ' || coalesce(now.churned, 0)
                   || ' vs active before ' || {_ACTIVE_OF('before')}
            FROM span LEFT JOIN activation_pair_counts AS now ON now.period = span.p
            LEFT JOIN activation_pair_counts AS before ON before.period = span.q""",
        shared=("activation_pair_counts",),
    ),
    Check(
        "nobody_disappears",
        "Invariant 4: rows of p = rows of p-1 + new(p), and every user of p-1 is still there.",
        lambda c: f"""
            WITH now AS (SELECT count(*) AS n, count(*) FILTER (WHERE state = 'new') AS new
                         FROM {c.activation} WHERE period_start = {c.p}),
                 before AS (SELECT count(*) AS n FROM {c.activation} WHERE period_start = {c.q}),
                 gone AS ({_users_missing(c, c.activation, "state = 'new'")})
            SELECT abs(now.n - before.n - now.new) + gone.n,
                   'rows ' || now.n || ' vs ' || before.n || ' before + ' || now.new || ' new; '
                   || gone.n || ' users of the previous period missing'
            FROM now, before, gone""",
        lambda c: f"""
            SELECT user_id FROM {c.activation} WHERE period_start = {c.q}
            EXCEPT SELECT user_id FROM {c.activation} WHERE period_start = {c.p} LIMIT {EXAMPLE_ROWS}""",
        over_span=lambda c: f"""
            SELECT span.p,
                   abs(coalesce(now.n, 0) - coalesce(before.n, 0) - coalesce(now.new, 0)) + coalesce(lost.n, 0),
                   'rows ' || coalesce(now.n, 0) || ' vs ' || coalesce(before.n, 0) || ' before + '
                   || coalesce(now.new, 0) || ' new; ' || coalesce(lost.n, 0) || ' users of the previous period missing'
            FROM span LEFT JOIN activation_pair_counts AS now ON now.period = span.p
            LEFT JOIN activation_pair_counts AS before ON before.period = span.q
            LEFT JOIN ({_lost_over_span(c, "activation_users")}) AS lost ON lost.p = span.p""",
        shared=("activation_pair_counts", "activation_users", "bit_pairs"),
    ),
    Check(
        "prev_state_is_previous_state",
        "Invariant 5: for each state s, users of p with prev_state = s = users of p-1 with state = s.",
        # Over the four states, as the span form counts them (a null or unknown state is
        # only_valid_transitions' to catch).
        lambda c: _carried_over(
            f"SELECT prev_state AS s, count(*) AS n FROM {c.activation}"
            f" WHERE period_start = {c.p} AND prev_state IN {FOUR_STATES} GROUP BY 1",
            f"SELECT state AS s, count(*) AS n FROM {c.activation}"
            f" WHERE period_start = {c.q} AND state IN {FOUR_STATES} GROUP BY 1"),
        over_span=lambda c: f"""
            SELECT span.p, {' + '.join(f'abs(coalesce(now.prev_{s}, 0) - coalesce(before.{s}, 0))' for s in sql.STATES)},
                   coalesce(nullif(concat_ws(', ', {', '.join(
                       f"CASE WHEN coalesce(now.prev_{s}, 0) <> coalesce(before.{s}, 0) THEN '{s}: '"
                       f" || coalesce(now.prev_{s}, 0) || ' vs ' || coalesce(before.{s}, 0) END" for s in sql.STATES)}),
                       ''), 'ok')
            FROM span LEFT JOIN activation_pair_counts AS now ON now.period = span.p
            LEFT JOIN activation_pair_counts AS before ON before.period = span.q""",
        shared=("activation_pair_counts",),
    ),
    Check(
        "only_valid_transitions",
        "Invariant 6: only the nine (prev_state -> state) transitions of the contract occur.",
        lambda c: f"""
            SELECT count(*), count(*) || ' rows with an impossible transition'
            FROM {c.activation} WHERE period_start = {c.p} AND {IMPOSSIBLE_TRANSITION}""",
        lambda c: f"""
            SELECT prev_state, state, count(*) AS users
            FROM {c.activation} WHERE period_start = {c.p} AND {IMPOSSIBLE_TRANSITION}
            GROUP BY ALL LIMIT {EXAMPLE_ROWS}""",
        over_span=lambda c: _counted(c, "bad_pairs", "rows with an impossible transition"),
        shared=("activation_pair_counts",),
    ),
    Check(
        "columns_consistent",
        "Invariant 7: first <= last <= period_start; streak >= 1 iff active; inactive_streak >= 1 iff"
        " inactive; active_periods >= streak; return_gap >= 1 iff reactivated; prev_state null iff new.",
        lambda c: f"""
            SELECT count(*), count(*) || ' rows whose columns contradict each other'
            FROM {c.activation} WHERE period_start = {c.p} AND NOT coalesce({_COLUMN_RULES}, FALSE)""",
        lambda c: f"""
            SELECT * FROM {c.activation} WHERE period_start = {c.p}
            AND NOT coalesce({_COLUMN_RULES}, FALSE) LIMIT {EXAMPLE_ROWS}""",
        over_span=lambda c: _counted(c, "bad_columns", "rows whose columns contradict each other"),
        shared=("activation_pair_counts",),
    ),
    Check(
        "matches_days",
        "Invariant 9: the users active in the period are exactly the distinct users active on its days"
        " within [start_date, end_date], read from the daily fact by activity_date (not the model's query).",
        lambda c: f"""
            WITH a AS (SELECT user_id FROM {c.activation} WHERE period_start = {c.p} AND state IN {ACTIVE}),
                 f AS (SELECT DISTINCT user_id FROM {c.fact}
                       WHERE activity_date BETWEEN {c.first_day} AND {c.last_day}),
                 only_a AS (SELECT count(*) AS n FROM (SELECT user_id FROM a EXCEPT SELECT user_id FROM f)),
                 only_f AS (SELECT count(*) AS n FROM (SELECT user_id FROM f EXCEPT SELECT user_id FROM a))
            SELECT only_a.n + only_f.n, only_a.n || ' active users not active on any day, '
                   || only_f.n || ' users active on a day but not in the period'
            FROM only_a, only_f""",
        lambda c: f"""
            WITH a AS (SELECT user_id FROM {c.activation} WHERE period_start = {c.p} AND state IN {ACTIVE}),
                 f AS (SELECT DISTINCT user_id FROM {c.fact}
                       WHERE activity_date BETWEEN {c.first_day} AND {c.last_day})
            (SELECT user_id, 'active in the period, on none of its days' AS problem
             FROM (SELECT user_id FROM a EXCEPT SELECT user_id FROM f) LIMIT {EXAMPLE_ROWS})
            UNION ALL
            (SELECT user_id, 'active on a day, not in the period'
             FROM (SELECT user_id FROM f EXCEPT SELECT user_id FROM a) LIMIT {EXAMPLE_ROWS})""",
        grains=(Grain.weekly, Grain.monthly),
    ),
)


# --- transitions -------------------------------------------------------------------------------

_TRANSITION_PAIRS = """
    WITH g AS (SELECT {prev_state} AS f, {state} AS t, count(*) AS u FROM {activation}
               WHERE period_start = {p} GROUP BY ALL),
         tr AS (SELECT from_state AS f, to_state AS t, sum(users) AS u, count(*) AS copies FROM {transitions}
                WHERE period_start = {p} GROUP BY ALL),
         pairs AS (SELECT coalesce(g.f, tr.f) AS from_state, coalesce(g.t, tr.t) AS to_state,
                          g.u AS activation_users, tr.u AS transitions_users, coalesce(tr.copies, 0) AS copies
                   FROM g FULL OUTER JOIN tr ON g.f IS NOT DISTINCT FROM tr.f AND g.t = tr.t
                   WHERE g.u IS DISTINCT FROM tr.u OR tr.copies > 1)
"""

def _equals_grouped_activation(
    description: str, transitions: str, prev_state: str, state: str, grains: tuple[Grain, ...] = tuple(Grain),
) -> Check:
    """A transitions table (`transitions` names the Period property) against the activation
    relation grouped by (prev_state, state) columns."""

    def pairs(c: Period) -> str:
        return _TRANSITION_PAIRS.format(activation=c.activation, transitions=getattr(c, transitions), p=c.p,
                                        prev_state=prev_state, state=state)

    def violations(c: Period) -> str:
        table = getattr(c, transitions)
        return pairs(c) + f"""
            , totals AS (SELECT (SELECT coalesce(sum(users), 0) FROM {table} WHERE period_start = {c.p})
                                AS users,
                                (SELECT count(*) FROM {c.activation} WHERE period_start = {c.p}) AS rows)
            SELECT (SELECT count(*) FROM pairs) + CASE WHEN totals.users = totals.rows THEN 0 ELSE 1 END,
                   (SELECT count(*) FROM pairs) || ' (from_state, to_state) pairs disagree with the activation'
                   || ' table or appear twice; users add up to ' || totals.users || ' for '
                   || totals.rows || ' activation rows'
            FROM totals"""

    def over_span(c: Span) -> str:
        table = getattr(c, transitions)
        within = f"period_start BETWEEN {c.first} AND {c.last}"
        return f"""
            SELECT span.p, coalesce(bad.n, 0) + CASE WHEN coalesce(total.users, 0) = coalesce(a.n, 0) THEN 0 ELSE 1 END,
                   coalesce(bad.n, 0) || ' (from_state, to_state) pairs disagree with the activation'
                   || ' table or appear twice; users add up to ' || coalesce(total.users, 0) || ' for '
                   || coalesce(a.n, 0) || ' activation rows'
            FROM span LEFT JOIN activation_counts AS a ON a.period = span.p
            LEFT JOIN (SELECT period_start, sum(users) AS users FROM {table} WHERE {within} GROUP BY period_start)
                AS total ON total.period_start = span.p
            LEFT JOIN (
                SELECT coalesce(g.period, tr.period) AS period, count(*) AS n
                FROM (SELECT period_start AS period, {prev_state} AS f, {state} AS t, count(*) AS u
                      FROM {c.activation} WHERE {within} GROUP BY ALL) AS g
                FULL OUTER JOIN (SELECT period_start AS period, from_state AS f, to_state AS t, sum(users) AS u,
                                        count(*) AS copies
                                 FROM {table} WHERE {within} GROUP BY ALL) AS tr
                ON g.period = tr.period AND g.f IS NOT DISTINCT FROM tr.f AND g.t = tr.t
                WHERE g.u IS DISTINCT FROM tr.u OR tr.copies > 1
                GROUP BY 1) AS bad ON bad.period = span.p"""

    return Check("equals_grouped_activation", description, violations,
                 lambda c: pairs(c) + f"SELECT * FROM pairs LIMIT {EXAMPLE_ROWS}",
                 grains=grains, over_span=over_span, shared=("activation_counts",))


TRANSITIONS_CHECKS = (
    _equals_grouped_activation(
        "Invariant 8: the transitions table equals the activation table grouped by (prev_state, state):"
        " one row per pair, the same users; its users add up to the period's activation rows.",
        "transitions", "prev_state", "state"),
)


# --- growth accounting and cohorts ------------------------------------------------------------------

GROWTH_CHECKS = (
    Check(
        "identities",
        "One row; active = new + retained + reactivated; active_prev = retained + churned;"
        " users_ever = active + churned + dormant; active_change = active - active_prev.",
        lambda c: f"""
            SELECT coalesce(sum(
                       abs(active - new - retained - reactivated) + abs(active_prev - retained - churned)
                       + abs(users_ever - active - churned - dormant) + abs(active_change - active + active_prev)), 0)
                   + abs(count(*) - 1),
                   count(*) || ' row(s); active ' || any_value(active) || ' = ' || any_value(new) || ' + '
                   || any_value(retained) || ' + ' || any_value(reactivated) || '; active_prev '
                   || any_value(active_prev) || ' = ' || any_value(retained) || ' + ' || any_value(churned)
            FROM {c.growth} WHERE period_start = {c.p}""",
        over_span=lambda c: f"""
            SELECT span.p,
                   coalesce(sum(
                       abs(g.active - g.new - g.retained - g.reactivated) + abs(g.active_prev - g.retained - g.churned)
                       + abs(g.users_ever - g.active - g.churned - g.dormant)
                       + abs(g.active_change - g.active + g.active_prev)), 0)
                   + abs(count(g.period_start) - 1),
                   count(g.period_start) || ' row(s); active ' || any_value(g.active) || ' = ' || any_value(g.new)
                   || ' + ' || any_value(g.retained) || ' + ' || any_value(g.reactivated) || '; active_prev '
                   || any_value(g.active_prev) || ' = ' || any_value(g.retained) || ' + ' || any_value(g.churned)
            FROM span LEFT JOIN ({_in_span(c, c.growth)}) AS g ON g.period_start = span.p
            GROUP BY span.p""",
    ),
    Check(
        "active_prev_is_previous_active",
        "active_prev equals the active users of the previous period's activation partition.",
        lambda c: f"""
            SELECT abs(g.active_prev - {_active_count(c.activation, c.q)}),
                   'active_prev ' || g.active_prev || ' vs ' || {_active_count(c.activation, c.q)}
                   || ' active users in the previous period'
            FROM {c.growth} AS g WHERE period_start = {c.p}""",
        over_span=lambda c: f"""
            SELECT span.p, abs(g.active_prev - {_ACTIVE_OF('before')}),
                   'active_prev ' || g.active_prev || ' vs ' || {_ACTIVE_OF('before')}
                   || ' active users in the previous period'
            FROM span JOIN ({_in_span(c, c.growth)}) AS g ON g.period_start = span.p
            LEFT JOIN activation_counts AS before ON before.period = span.q""",
        shared=("activation_counts",),
    ),
)

COHORTS_CHECKS = (
    Check(
        "cohort_sizes_stable",
        "A cohort's size never changes from one period to the next, and the sizes add up to the"
        " period's users.",
        lambda c: f"""
            WITH now AS (SELECT cohort, cohort_size FROM {c.cohorts} WHERE period_start = {c.p}),
                 before AS (SELECT cohort, cohort_size FROM {c.cohorts} WHERE period_start = {c.q}),
                 changed AS (SELECT count(*) AS n FROM before LEFT JOIN now USING (cohort)
                             WHERE now.cohort_size IS DISTINCT FROM before.cohort_size),
                 total AS (SELECT (SELECT coalesce(sum(cohort_size), 0) FROM now)
                                  - (SELECT count(*) FROM {c.activation} WHERE period_start = {c.p}) AS d)
            SELECT changed.n + abs(total.d),
                   changed.n || ' cohorts changed size; sizes minus users: ' || total.d
            FROM changed, total""",
        over_span=lambda c: f"""
            WITH cohorts AS (SELECT period_start, cohort, cohort_size FROM {c.cohorts}
                             WHERE period_start BETWEEN {c.lowest} AND {c.last}),
                 changed AS (SELECT span.p, count(*) AS n
                             FROM span JOIN cohorts AS before ON before.period_start = span.q
                             LEFT JOIN cohorts AS now ON now.period_start = span.p AND now.cohort = before.cohort
                             WHERE now.cohort_size IS DISTINCT FROM before.cohort_size
                             GROUP BY span.p),
                 sizes AS (SELECT period_start AS p, sum(cohort_size) AS size FROM cohorts GROUP BY period_start)
            SELECT span.p, coalesce(changed.n, 0) + abs(coalesce(sizes.size, 0) - {_count('a.n')}),
                   coalesce(changed.n, 0) || ' cohorts changed size; sizes minus users: '
                   || (coalesce(sizes.size, 0) - {_count('a.n')})
            FROM span LEFT JOIN changed ON changed.p = span.p LEFT JOIN sizes ON sizes.p = span.p
            LEFT JOIN activation_counts AS a ON a.period = span.p""",
        shared=("activation_counts",),
    ),
)


# --- rolling engagement (daily grain) ----------------------------------------------------------------

DAILY = (Grain.daily,)


def _window_users(c: Period) -> str:
    """Distinct users of the fact in the week and in the month ending on the day (not the bits):
    each user of the month once, with their latest day in it."""
    engagement = c.behavior.engagement
    return f"""
        SELECT count(*) FILTER (WHERE latest >= {c.window_start(engagement.week_days)}) AS week, count(*) AS month
        FROM (SELECT user_id, max(period_start) AS latest FROM {c.fact}
              WHERE period_start BETWEEN {c.window_start(engagement.month_days)} AND {c.p}
              GROUP BY user_id) AS users_of_the_month"""


def _text(value: str) -> str:
    return f"coalesce(CAST({value} AS VARCHAR), 'none')"


def _window_users_over_span(c: Span) -> str:
    """Per day p of the span, rows (p, week_from, month_from, week, month): the distinct users of the
    fact in the week and the month ending on p. Each user of the days read is one row with a bit per
    day it was active (`seen`); a window is a run of bits. The span's days are read in groups whose
    days, from the first window's first day on, fit in one BIGINT's 62 bits (every group, for
    consecutive days)."""
    week, month = c.behavior.engagement.week_days, c.behavior.engagement.month_days
    groups: list[list[dt.date]] = []
    for period in c.periods:
        if groups and (period - window_first_day(groups[-1][0], month)).days < 62:
            groups[-1].append(period)
        else:
            groups.append([period])
    selects = []
    for group in groups:
        lowest = window_first_day(group[0], month)
        def mask(period: dt.date, days: int) -> str:
            return f"CAST({((1 << days) - 1) << (window_first_day(period, days) - lowest).days} AS BIGINT)"
        windows = ", ".join(
            f"({date_lit(p)}, {mask(p, week)}, {mask(p, month)}, {literal(str(window_first_day(p, week)))},"
            f" {literal(str(window_first_day(p, month)))})" for p in group)
        days = ", ".join(f"({date_lit(lowest + dt.timedelta(days=i))}, CAST({1 << i} AS BIGINT))"
                         for i in range((group[-1] - lowest).days + 1))
        selects.append(f"""
            SELECT w.p, w.week_from, w.month_from,
                   count(*) FILTER (WHERE u.seen & w.week_mask <> 0) AS week,
                   count(*) FILTER (WHERE u.seen & w.month_mask <> 0) AS month
            FROM (VALUES {windows}) AS w(p, week_mask, month_mask, week_from, month_from)
            LEFT JOIN (SELECT fact.user_id, bit_or(days.bit) AS seen
                       FROM {c.fact} AS fact JOIN (VALUES {days}) AS days(day, bit) ON fact.period_start = days.day
                       GROUP BY fact.user_id) AS u ON TRUE
            GROUP BY w.p, w.week_from, w.month_from""")
    return "\nUNION ALL\n".join(selects)


def _in_span(c: Span, table: str, columns: str = "*") -> str:
    """The rows of `table` in the span's periods (and the days between them)."""
    return f"SELECT {columns} FROM {table} WHERE period_start BETWEEN {c.first} AND {c.last}"


ENGAGEMENT_CHECKS = (
    Check(
        "agrees_with_activation",
        "E1: engagement new = activation new, and current + reactivated + resurrected = activation"
        " retained + reactivated (the bits against the FirstLast dates).",
        lambda c: f"""
            WITH e AS (SELECT "new" AS new, "current" + "reactivated" + "resurrected" AS returning
                       FROM {c.engagement} WHERE period_start = {c.p}),
                 a AS (SELECT count(*) FILTER (WHERE state = 'new') AS new,
                              count(*) FILTER (WHERE state IN ('retained', 'reactivated')) AS returning
                       FROM {c.activation} WHERE period_start = {c.p})
            SELECT coalesce(abs(e.new - a.new) + abs(e.returning - a.returning), 1),
                   'engagement new ' || {_text('e.new')} || ' vs activation new ' || a.new
                   || '; current + reactivated + resurrected ' || {_text('e.returning')}
                   || ' vs retained + reactivated ' || a.returning
            FROM a LEFT JOIN e ON TRUE""",
        grains=DAILY,
        over_span=lambda c: f"""
            SELECT span.p, coalesce(abs(e.new - {_count('a.new')}) + abs(e.returning - {_RETURNING_OF('a')}), 1),
                   'engagement new ' || {_text('e.new')} || ' vs activation new ' || {_count('a.new')}
                   || '; current + reactivated + resurrected ' || {_text('e.returning')}
                   || ' vs retained + reactivated ' || {_RETURNING_OF('a')}
            FROM span LEFT JOIN activation_counts AS a ON a.period = span.p
            LEFT JOIN ({_in_span(c, c.engagement, 'period_start, "new" AS new,'
                                 ' "current" + "reactivated" + "resurrected" AS returning')})
                AS e ON e.period_start = span.p""",
        shared=("activation_counts",),
    ),
    Check(
        "windows_match_fact",
        "E2: wau and mau equal the distinct users of the fact on the days of their windows.",
        lambda c: f"""
            WITH e AS (SELECT wau, mau FROM {c.engagement} WHERE period_start = {c.p}),
                 f AS ({_window_users(c)})
            SELECT coalesce(abs(e.wau - f.week) + abs(e.mau - f.month), 1),
                   'wau ' || {_text('e.wau')} || ' vs ' || f.week || ' users in the fact from '
                   || {literal(str(window_first_day(c.start, c.behavior.engagement.week_days)))}
                   || '; mau ' || {_text('e.mau')} || ' vs ' || f.month || ' from '
                   || {literal(str(window_first_day(c.start, c.behavior.engagement.month_days)))}
            FROM f LEFT JOIN e ON TRUE""",
        grains=DAILY,
        over_span=lambda c: f"""
            SELECT f.p, coalesce(abs(e.wau - f.week) + abs(e.mau - f.month), 1),
                   'wau ' || {_text('e.wau')} || ' vs ' || f.week || ' users in the fact from ' || f.week_from
                   || '; mau ' || {_text('e.mau')} || ' vs ' || f.month || ' from ' || f.month_from
            FROM ({_window_users_over_span(c)}) AS f
            LEFT JOIN ({_in_span(c, c.engagement, 'period_start, wau, mau')}) AS e ON e.period_start = f.p""",
    ),
    Check(
        "states_add_up",
        "E3: dau + at_risk_wau + at_risk_mau + dormant = users_ever = the day's activation rows; dau = new"
        " + current + reactivated + resurrected, wau = dau + at_risk_wau, mau = wau + at_risk_mau.",
        lambda c: f"""
            WITH e AS (SELECT * FROM {c.engagement} WHERE period_start = {c.p}),
                 a AS (SELECT count(*) AS rows FROM {c.activation} WHERE period_start = {c.p}),
                 n AS (SELECT count(*) AS rows FROM e)
            SELECT coalesce(sum(abs(dau + at_risk_wau + at_risk_mau + dormant - users_ever)
                       + abs(users_ever - a.rows) + abs(dau - "new" - "current" - reactivated - resurrected)
                       + abs(wau - dau - at_risk_wau) + abs(mau - wau - at_risk_mau)), 0) + abs(any_value(n.rows) - 1),
                   any_value(n.rows) || ' row(s); dau ' || {_text('any_value(dau)')} || ' + at_risk_wau '
                   || {_text('any_value(at_risk_wau)')} || ' + at_risk_mau ' || {_text('any_value(at_risk_mau)')}
                   || ' + dormant ' || {_text('any_value(dormant)')} || ' vs users_ever '
                   || {_text('any_value(users_ever)')} || ' and ' || any_value(a.rows) || ' activation rows'
            FROM a CROSS JOIN n LEFT JOIN e ON TRUE""",
        grains=DAILY,
        over_span=lambda c: f"""
            SELECT span.p,
                   coalesce(sum(abs(e.dau + e.at_risk_wau + e.at_risk_mau + e.dormant - e.users_ever)
                       + abs(e.users_ever - {_count('a.n')})
                       + abs(e.dau - e."new" - e."current" - e.reactivated - e.resurrected)
                       + abs(e.wau - e.dau - e.at_risk_wau) + abs(e.mau - e.wau - e.at_risk_mau)), 0)
                       + abs(count(e.period_start) - 1),
                   count(e.period_start) || ' row(s); dau ' || {_text('any_value(e.dau)')} || ' + at_risk_wau '
                   || {_text('any_value(e.at_risk_wau)')} || ' + at_risk_mau ' || {_text('any_value(e.at_risk_mau)')}
                   || ' + dormant ' || {_text('any_value(e.dormant)')} || ' vs users_ever '
                   || {_text('any_value(e.users_ever)')} || ' and ' || any_value({_count('a.n')}) || ' activation rows'
            FROM span LEFT JOIN activation_counts AS a ON a.period = span.p
            LEFT JOIN ({_in_span(c, c.engagement)}) AS e ON e.period_start = span.p
            GROUP BY span.p""",
        shared=("activation_counts",),
    ),
)

ENGAGEMENT_TRANSITIONS_CHECKS = (
    Check(
        "prev_state_is_previous_state",
        "E4: for each state s, users of d with prev_engagement_state = s = users of d-1 with engagement_state = s.",
        lambda c: _carried_over(
            f"SELECT from_state AS s, sum(users) AS n FROM {c.engagement_transitions}"
            f" WHERE period_start = {c.p} AND from_state IS NOT NULL GROUP BY 1",
            f"SELECT to_state AS s, sum(users) AS n FROM {c.engagement_transitions}"
            f" WHERE period_start = {c.q} GROUP BY 1"),
        grains=DAILY,
        over_span=lambda c: _carried_over_span(
            f"SELECT span.p, t.from_state AS s, sum(t.users) AS n FROM span JOIN {c.engagement_transitions} AS t"
            f" ON t.period_start = span.p WHERE t.from_state IS NOT NULL GROUP BY 1, 2",
            f"SELECT span.p, t.to_state AS s, sum(t.users) AS n FROM span JOIN {c.engagement_transitions} AS t"
            f" ON t.period_start = span.q GROUP BY 1, 2"),
    ),
    _equals_grouped_activation(
        "The engagement transitions equal the daily activation rows grouped by (prev_engagement_state,"
        " engagement_state); their users add up to the day's activation rows.",
        "engagement_transitions", "prev_engagement_state", "engagement_state", DAILY),
)

def _stickiness_sums(c: Period | Span) -> str:
    """The stickiness rows' users per window, and the rows out of range."""
    engagement = c.behavior.engagement
    return f"""coalesce(sum(users) FILTER (WHERE "window" = 'week'), 0) AS week,
               coalesce(sum(users) FILTER (WHERE "window" = 'month'), 0) AS month,
               count(*) FILTER (WHERE users <= 0 OR NOT coalesce(active_days BETWEEN 1 AND CASE "window"
                   WHEN 'week' THEN {engagement.week_days} WHEN 'month' THEN {engagement.month_days} END, FALSE))
                   AS bad"""


def _users_in_windows(c: Period | Span) -> str:
    """The activation rows with an active day in the week and in the month (the days' bits)."""
    engagement = c.behavior.engagement
    return f"""count(*) FILTER (WHERE days_seen_bits & {sql.window_mask(engagement.week_days)} <> 0) AS week,
               count(*) FILTER (WHERE days_seen_bits & {sql.window_mask(engagement.month_days)} <> 0) AS month"""


STICKINESS_CHECKS = (
    Check(
        "adds_up_to_active_users",
        "E5: the stickiness rows of each window add up to the users active in it (the day's users with an"
        " active day in the window; windows_match_fact ties those to the fact); active_days lies in 1..W"
        " (week) or 1..M (month); users > 0.",
        lambda c: f"""
            WITH s AS (SELECT {_stickiness_sums(c)} FROM {c.stickiness} WHERE period_start = {c.p}),
                 f AS (SELECT {_users_in_windows(c)} FROM {c.activation} WHERE period_start = {c.p})
            SELECT abs(s.week - f.week) + abs(s.month - f.month) + s.bad,
                   'week rows add up to ' || s.week || ' for ' || f.week || ' active users; month rows to '
                   || s.month || ' for ' || f.month || '; ' || s.bad || ' rows out of range'
            FROM s, f""",
        over_span=lambda c: f"""
            WITH s AS (SELECT period_start AS p, {_stickiness_sums(c)} FROM {c.stickiness}
                       WHERE period_start BETWEEN {c.first} AND {c.last} GROUP BY period_start),
                 f AS (SELECT period_start AS p, {_users_in_windows(c)} FROM {c.activation}
                       WHERE period_start BETWEEN {c.first} AND {c.last} GROUP BY period_start)
            SELECT span.p,
                   abs({_count('s.week')} - {_count('f.week')}) + abs({_count('s.month')} - {_count('f.month')})
                   + {_count('s.bad')},
                   'week rows add up to ' || {_count('s.week')} || ' for ' || {_count('f.week')}
                   || ' active users; month rows to ' || {_count('s.month')} || ' for ' || {_count('f.month')}
                   || '; ' || {_count('s.bad')} || ' rows out of range'
            FROM span LEFT JOIN s ON s.p = span.p LEFT JOIN f ON f.p = span.p""",
        grains=DAILY,
    ),
)


# --- segments -------------------------------------------------------------------------------------


def _segment_values_of_activation(c: Period) -> str:
    """Rows (segment, value, users): the period's activation rows grouped by each segment's column."""
    return "\n            UNION ALL ".join(
        f"SELECT {literal(s.key)} AS segment, {ident(s.key)} AS value, count(*) AS users FROM {c.activation}"
        f" WHERE period_start = {c.p} GROUP BY {ident(s.key)}" for s in c.behavior.segments)


def _latest_values_of_fact(c: Period) -> str:
    """One row per user active in p: for each segment its value on the user's latest row of the period
    with one (two steps: the latest instant, then the greatest value at it), mapped through `values:`,
    null when no row has one; from the fact alone, every segment in the same two passes."""
    segments = c.behavior.segments
    text = ", ".join(f"CAST({ident(s.column)} AS VARCHAR) AS {ident('v_' + s.key)}" for s in segments)
    rows = (f"SELECT user_id, {sql.instant_order('occurred_at', c.time_type)} AS seen_at, {text}"
            f" FROM {c.fact} WHERE period_start >= {c.p} AND period_start < {c.next}")
    latest = ", ".join(f"max(seen_at) FILTER (WHERE {ident('v_' + s.key)} IS NOT NULL) AS {ident('t_' + s.key)}"
                       for s in segments)
    def value_at_latest(s) -> str:
        value, at = ident("v_" + s.key), ident("t_" + s.key)
        return f"{sql.mapped(s, f'max(rows.{value}) FILTER (WHERE rows.seen_at = latest.{at})')} AS {ident('f_' + s.key)}"
    values = ", ".join(value_at_latest(s) for s in segments)
    return f"""
            WITH rows AS ({rows}),
                 latest AS (SELECT user_id, {latest} FROM rows GROUP BY user_id)
            SELECT rows.user_id, {values}
            FROM rows JOIN latest ON rows.user_id = latest.user_id
            GROUP BY rows.user_id"""


def _segment_state_mismatches(c: Period) -> str:
    """The (segment, user) pairs whose value in FirstLast(p) is not the latest value in the fact:
    FirstLast(p) read once, joined with the fact's values by user. Only its rows of users active in
    p can match (a user of the fact whose row says otherwise is a mismatch)."""
    segments = c.behavior.segments
    state = ", ".join(ident(s.key) for s in segments)
    mismatches = "\n                    UNION ALL ".join(
        f"SELECT {literal(s.key)} AS segment, fact_values.user_id, fact_values.{ident('f_' + s.key)} AS latest_in_fact,"
        f" state.{ident(s.key)} AS in_state FROM fact_values LEFT JOIN state ON state.user_id = fact_values.user_id"
        f" WHERE fact_values.{ident('f_' + s.key)} IS NOT NULL"
        f" AND state.{ident(s.key)} IS DISTINCT FROM fact_values.{ident('f_' + s.key)}" for s in segments)
    return f"""
            WITH fact_values AS ({_latest_values_of_fact(c)}),
                 state AS (SELECT user_id, {state} FROM {c.firstlast}
                           WHERE period_start = {c.p} AND last_active_period = {c.p}),
                 mismatches AS ({mismatches})"""


SEGMENT_STATE_CHECKS = (
    Check(
        "segment_is_latest_value",
        "S5: every user active in the period with a value of a segment's column on a row of it has, as"
        " the segment, the latest such value (rows at the same instant: the greatest as text), mapped"
        " through `values:` — computed from the fact, not from the state.",
        lambda c: _segment_state_mismatches(c) + """
            SELECT count(*), count(*) || ' (segment, user) values differ from the latest value in the fact'
            FROM mismatches""",
        lambda c: _segment_state_mismatches(c) + f" SELECT * FROM mismatches LIMIT {EXAMPLE_ROWS}",
        reads_time=True,
    ),
)


def _segment_pairs(c: Period) -> str:
    return f"""
            WITH st AS (SELECT segment, from_state AS f, to_state AS t, sum(users) AS u FROM {c.segment_transitions}
                        WHERE period_start = {c.p} GROUP BY ALL),
                 expected AS (SELECT segments.segment, tr.from_state AS f, tr.to_state AS t, tr.users AS u
                              FROM ({c.segment_names}) AS segments
                              CROSS JOIN (SELECT * FROM {c.transitions} WHERE period_start = {c.p}) AS tr),
                 pairs AS (SELECT coalesce(expected.segment, st.segment) AS segment,
                                  coalesce(expected.f, st.f) AS from_state, coalesce(expected.t, st.t) AS to_state,
                                  expected.u AS transitions_users, st.u AS segment_users
                           FROM expected FULL OUTER JOIN st
                             ON expected.segment = st.segment AND expected.f IS NOT DISTINCT FROM st.f
                            AND expected.t = st.t
                           WHERE expected.u IS DISTINCT FROM st.u)"""


def _segment_values(c: Period) -> str:
    return f"""
            WITH st AS (SELECT segment, value, sum(users) AS u FROM {c.segment_transitions}
                        WHERE period_start = {c.p} GROUP BY ALL),
                 a AS ({_segment_values_of_activation(c)}),
                 values_ AS (SELECT coalesce(a.segment, st.segment) AS segment,
                                    CASE WHEN a.segment IS NULL THEN st.value ELSE a.value END AS value,
                                    a.users AS activation_rows, st.u AS segment_users
                             FROM a FULL OUTER JOIN st ON a.segment = st.segment AND a.value IS NOT DISTINCT FROM st.value
                             WHERE a.users IS DISTINCT FROM st.u)"""


SEGMENT_TRANSITIONS_CHECKS = (
    Check(
        "sums_to_transitions",
        "S1: for each segment, the segment transitions summed over prev_value and value equal the"
        " transitions table, pair by pair.",
        lambda c: _segment_pairs(c) + """
            SELECT count(*), count(*) || ' (segment, from_state, to_state) pairs disagree with the transitions table'
            FROM pairs""",
        lambda c: _segment_pairs(c) + f" SELECT * FROM pairs LIMIT {EXAMPLE_ROWS}",
    ),
    Check(
        "values_match_activation",
        "S2: for each segment and value, the users of the segment transitions with that value equal the"
        " activation rows of the period with the segment's column = value.",
        lambda c: _segment_values(c) + """
            SELECT count(*), count(*) || ' (segment, value) user counts disagree with the activation rows'
            FROM values_""",
        lambda c: _segment_values(c) + f" SELECT * FROM values_ LIMIT {EXAMPLE_ROWS}",
    ),
    Check(
        "nobody_moves_while_inactive",
        "S4: a user inactive in the period keeps the value of the previous one (to_state = 'inactive'"
        " implies value is not distinct from prev_value).",
        lambda c: f"""
            SELECT coalesce(sum(users), 0), coalesce(sum(users), 0) || ' inactive users changed value'
            FROM {c.segment_transitions}
            WHERE period_start = {c.p} AND to_state = 'inactive' AND value IS DISTINCT FROM prev_value""",
        lambda c: f"""
            SELECT * FROM {c.segment_transitions}
            WHERE period_start = {c.p} AND to_state = 'inactive' AND value IS DISTINCT FROM prev_value
            LIMIT {EXAMPLE_ROWS}""",
    ),
)

_GROWTH_COUNTS = ("active", "new", "retained", "reactivated", "churned", "dormant", "users_ever", "active_prev")

SEGMENT_GROWTH_CHECKS = (
    Check(
        "accounting_adds_up",
        "S3: per value, active - active_prev = new + reactivated + moved_in - moved_out - churned (and"
        " active = new + retained + reactivated, active_change = active - active_prev); per segment, the"
        " moves in and out balance, and each count summed over the values equals the growth table's.",
        lambda c: f"""
            WITH g AS (SELECT * FROM {c.segment_growth} WHERE period_start = {c.p}),
                 rows_off AS (
                    SELECT count(*) AS n FROM g
                    WHERE active - active_prev <> new + reactivated + moved_in - moved_out - churned
                       OR active <> new + retained + reactivated OR active_change <> active - active_prev),
                 sums AS (SELECT segment, sum(moved_in) - sum(moved_out) AS unbalanced,
                                 {", ".join(f"sum({ident(n)}) AS {ident(n)}" for n in _GROWTH_COUNTS)}
                          FROM g GROUP BY segment),
                 totals_off AS (
                    SELECT count(*) AS n
                    FROM ({c.segment_names}) AS segments
                    CROSS JOIN (SELECT * FROM {c.growth} WHERE period_start = {c.p}) AS whole
                    LEFT JOIN sums ON sums.segment = segments.segment
                    WHERE NOT ({" AND ".join(f"coalesce(sums.{ident(n)}, 0) = whole.{ident(n)}" for n in _GROWTH_COUNTS)}
                               AND coalesce(sums.unbalanced, 0) = 0))
            SELECT rows_off.n + totals_off.n,
                   rows_off.n || ' value rows break the identity; ' || totals_off.n
                   || ' segments do not add up to the growth table or have unbalanced moves'
            FROM rows_off, totals_off""",
    ),
)

SEGMENT_ENGAGEMENT_CHECKS = (
    Check(
        "sums_to_engagement",
        "S6: for each segment, dau, wau, mau and users_ever summed over the values equal the engagement"
        " table's for the day.",
        lambda c: f"""
            WITH sums AS (SELECT segment, sum(dau) AS dau, sum(wau) AS wau, sum(mau) AS mau,
                                 sum(users_ever) AS users_ever
                          FROM {c.segment_engagement} WHERE period_start = {c.p} GROUP BY segment)
            SELECT count(*), count(*) || ' segments do not add up to the engagement table'
            FROM ({c.segment_names}) AS segments
            CROSS JOIN (SELECT * FROM {c.engagement} WHERE period_start = {c.p}) AS whole
            LEFT JOIN sums ON sums.segment = segments.segment
            WHERE NOT ({" AND ".join(f"coalesce(sums.{n}, 0) = whole.{n}" for n in ("dau", "wau", "mau", "users_ever"))})""",
        grains=DAILY,
    ),
)


# --- the growth model ---------------------------------------------------------------------------------

# Sums of doubles are compared with a relative tolerance: a projection of 90 days is 90 sums of
# products, exact up to rounding.
def _off(value: str, expected: str) -> str:
    return f"abs(({value}) - ({expected})) > 1e-6 * greatest(1.0, abs({expected}))"


FORECAST_RATES_CHECKS = (
    Check(
        "rates_are_shares",
        "G1: every rate lies in [0, 1] and each of the seven states' rates add up to 1; one inflow row,"
        " n >= 0.",
        lambda c: f"""
            WITH rates AS (SELECT * FROM {c.forecast_rates} WHERE period_start = {c.p}),
                 states AS (SELECT * FROM (VALUES {", ".join(f"({literal(s)})" for s in sql.ENGAGEMENT_STATES)})
                            AS states(state)),
                 sums AS (SELECT from_state, sum(rate) AS total FROM rates WHERE from_state IS NOT NULL
                          GROUP BY from_state),
                 out_of_range AS (SELECT count(*) AS n FROM rates
                                  WHERE from_state IS NOT NULL AND NOT (rate > 0 AND rate <= 1)),
                 unbalanced AS (SELECT count(*) AS n FROM states LEFT JOIN sums ON sums.from_state = states.state
                                WHERE sums.total IS NULL OR {_off("sums.total", "1.0")}),
                 inflow AS (SELECT count(*) AS n, count(*) FILTER (WHERE to_state = 'new' AND rate >= 0) AS good
                            FROM rates WHERE from_state IS NULL),
                 unknown AS (SELECT count(*) AS n FROM rates LEFT JOIN states ON states.state = rates.from_state
                             WHERE rates.from_state IS NOT NULL AND states.state IS NULL)
            SELECT out_of_range.n + unbalanced.n + unknown.n + CASE WHEN inflow.n = 1 AND inflow.good = 1 THEN 0 ELSE 1 END,
                   out_of_range.n || ' rates outside (0, 1]; ' || unbalanced.n || ' states whose rates do not add'
                   || ' up to 1; ' || unknown.n || ' rows of unknown states; ' || inflow.n || ' inflow rows'
            FROM out_of_range, unbalanced, inflow, unknown""",
        grains=DAILY,
    ),
)

FORECAST_CHECKS = (
    Check(
        "states_add_up",
        "G2: at every horizon k = 1 .. H of every scenario, the projected states add up to users_ever of d"
        " + k * n (* the scenario's new_users factor), and dau, wau, mau are their sums.",
        lambda c: f"""
            WITH f AS (SELECT * FROM {c.forecast} WHERE period_start = {c.p}),
                 inflow AS (SELECT rate AS n FROM {c.forecast_rates} WHERE period_start = {c.p} AND from_state IS NULL),
                 base AS (SELECT users_ever FROM {c.engagement} WHERE period_start = {c.p}),
                 wrong AS (
                    SELECT count(*) AS n FROM f JOIN ({c.scenario_factors}) AS factors ON factors.scenario = f.scenario
                    CROSS JOIN inflow CROSS JOIN base
                    WHERE {_off(" + ".join(ident(s) for s in sql.ENGAGEMENT_STATES), "base.users_ever + f.horizon * inflow.n * factors.factor")}
                       OR {_off("dau", " + ".join(ident(s) for s in sql.ENGAGEMENT_ACTIVE))}
                       OR {_off("wau", "dau + at_risk_wau")} OR {_off("mau", "wau + at_risk_mau")}
                       OR date_diff('day', f.period_start, f.day) <> f.horizon),
                 shape AS (SELECT count(*) AS n FROM ({c.scenario_factors}) AS factors
                           LEFT JOIN (SELECT scenario, count(DISTINCT horizon) AS horizons, min(horizon) AS lo,
                                             max(horizon) AS hi, count(*) AS rows FROM f GROUP BY scenario) AS got
                             ON got.scenario = factors.scenario
                           WHERE got.scenario IS NULL OR got.horizons <> {c.behavior.growth_model.horizon_days if c.behavior.growth_model else 0}
                              OR got.rows <> got.horizons OR got.lo <> 1 OR got.hi <> got.horizons),
                 stray AS (SELECT count(*) AS n FROM f LEFT JOIN ({c.scenario_factors}) AS factors
                           ON factors.scenario = f.scenario WHERE factors.scenario IS NULL)
            SELECT wrong.n + shape.n + stray.n + CASE WHEN (SELECT count(*) FROM inflow) = 1 THEN 0 ELSE 1 END,
                   wrong.n || ' rows do not add up; ' || shape.n || ' scenarios without each horizon 1..H once; '
                   || stray.n || ' rows of unknown scenarios'
            FROM wrong, shape, stray""",
        grains=DAILY,
    ),
)

FORECAST_ACCURACY_CHECKS = (
    Check(
        "equals_forecasts_against_actuals",
        "G3: the accuracy rows of d are the stored baseline forecasts made 1, 7 and 28 days before d (those"
        " that exist) against the engagement table of d: one row per (horizon, measure), none more.",
        lambda c: f"""
            WITH expected AS ({sql.accuracy_select(sql.forecast_tables(c.behavior.name)[0],
                                                   sql.engagement_table(c.behavior.name), [c.start])}),
                 got AS (SELECT * FROM {c.forecast_accuracy} WHERE period_start = {c.p}),
                 compared AS (
                    SELECT expected.horizon AS e_horizon, got.horizon AS g_horizon,
                           expected.forecast AS e_forecast, got.forecast AS g_forecast,
                           expected.actual AS e_actual, got.actual AS g_actual, got.error AS g_error,
                           got.relative_error AS g_relative, expected.relative_error AS e_relative
                    FROM expected FULL OUTER JOIN got
                      ON got.horizon = expected.horizon AND got.measure = expected.measure)
            SELECT count(*), count(*) || ' accuracy rows missing, extra or unequal to the stored forecasts'
            FROM compared
            WHERE e_horizon IS NULL OR g_horizon IS NULL OR g_actual <> e_actual
               OR {_off("g_forecast", "e_forecast")} OR {_off("g_error", "e_forecast - e_actual")}
               OR (g_relative IS NULL) <> (e_relative IS NULL)
               OR (e_relative IS NOT NULL AND {_off("g_relative", "e_relative")})""",
        grains=DAILY,
    ),
)


def forecast_checks(behavior: BehaviorConfig) -> dict[str, Sequence[Check]]:
    """The growth model's tables with their checks, in dependency order (none without it)."""
    if behavior.growth_model is None:
        return {}
    return dict(zip(sql.forecast_tables(behavior.name),
                    (FORECAST_CHECKS, FORECAST_RATES_CHECKS, FORECAST_ACCURACY_CHECKS)))


def firstlast_checks(behavior: BehaviorConfig) -> tuple[Check, ...]:
    return FIRSTLAST_CHECKS + (SEGMENT_STATE_CHECKS if behavior.segments else ())


def checks_by_table(behavior: BehaviorConfig, grain: Grain) -> dict[str, Sequence[Check]]:
    """Each checked table of a grain with its checks, in dependency order."""
    name = behavior.name
    tables = _checks_by_table(name, grain)
    tables[sql.firstlast_table(name, grain)] = firstlast_checks(behavior)
    if behavior.segments:
        tables |= {sql.segment_transitions_table(name, grain): SEGMENT_TRANSITIONS_CHECKS,
                   sql.segment_growth_table(name, grain): SEGMENT_GROWTH_CHECKS}
        if grain is Grain.daily:
            tables[sql.segment_engagement_table(name)] = SEGMENT_ENGAGEMENT_CHECKS
    if grain is Grain.daily:
        tables |= forecast_checks(behavior)
    return tables


def _checks_by_table(behavior: str, grain: Grain) -> dict[str, Sequence[Check]]:
    tables = {
        sql.firstlast_table(behavior, grain): FIRSTLAST_CHECKS,
        sql.activation_table(behavior, grain): ACTIVATION_CHECKS,
        sql.transitions_table(behavior, grain): TRANSITIONS_CHECKS,
        sql.growth_table(behavior, grain): GROWTH_CHECKS,
        sql.cohorts_table(behavior, grain): COHORTS_CHECKS,
    }
    if grain is Grain.daily:
        tables |= {
            sql.engagement_transitions_table(behavior): ENGAGEMENT_TRANSITIONS_CHECKS,
            sql.engagement_table(behavior): ENGAGEMENT_CHECKS,
            sql.stickiness_table(behavior): STICKINESS_CHECKS,
        }
    return tables


def checks_for(checks: Sequence[Check], grain: Grain) -> list[Check]:
    return [check for check in checks if grain in check.grains]


# --- evaluation --------------------------------------------------------------------------------


@dataclass
class CheckOutcome:
    """One check over the partitions of a run."""

    check: Check
    partitions: list[dt.date] = field(default_factory=list)
    failing: dict[dt.date, tuple[int, str]] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failing

    @property
    def violations(self) -> int:
        return sum(v for v, _ in self.failing.values())

    def summary(self) -> str:
        if self.passed:
            return f"passed on {len(self.partitions)} partition(s)"
        first, (count, detail) = next(iter(self.failing.items()))
        return (f"failed on {len(self.failing)} of {len(self.partitions)} partition(s); first {first}:"
                f" {detail}")


def period_context(behavior: BehaviorConfig, grain: Grain, period: dt.date,
                   time_type: str = "TIMESTAMP WITH TIME ZONE") -> Period:
    calendar = periods_for(behavior, grain)
    previous = None if period == first_period(behavior, grain) else calendar.previous(period)
    return Period(behavior, grain, period, previous, time_type)


SPAN_PARTITIONS = 31  # partitions per statement over a span: a month of days keeps its memory bounded


def evaluate(
    conn: Warehouse, checks: Sequence[Check], behavior: BehaviorConfig, grain: Grain,
    period: dt.date, outcomes: dict[str, CheckOutcome],
) -> None:
    """Evaluate `checks` on one partition, accumulating into `outcomes` (keyed by check name)."""
    evaluate_range(conn, checks, behavior, grain, [period], outcomes)


def span_statement(spanned: Sequence[tuple[int, Check]], span: Span) -> str:
    """One statement for the checks (index, check) that have a span form: rows (check_index,
    period_start, violations, detail), the relations they share computed once."""
    shared = dict.fromkeys(["span", *(name for _, check in spanned for name in check.shared)])
    union = "\nUNION ALL\n".join(
        f"SELECT {i} AS check_index, period_start, CAST(violations AS BIGINT) AS violations,"
        f" CAST(detail AS VARCHAR) AS detail"
        f" FROM ({check.over_span(span)}) AS check_{i}(period_start, violations, detail)"
        for i, check in spanned)
    return "WITH " + ",\n".join(f"{name} AS ({SHARED[name](span)})" for name in shared) + "\n" + union


def _span_forms(checks: Sequence[Check], many: bool) -> Callable[[Check], bool]:
    """Which checks run in their span form. Over several partitions, all that have one. On one
    partition (a daily run), only the view's counting checks, when two or more share
    `activation_counts` or `activation_pair_counts` (one pass over the view for p and p - 1 instead
    of one per check); the set checks keep their own query, as a distinct count and an EXCEPT cost
    less than grouping both periods by user, and so does any check alone, which reads only what it
    compares."""
    if many:
        return lambda check: check.over_span is not None
    counting = lambda check: (  # noqa: E731
        check.over_span is not None and bool({"activation_counts", "activation_pair_counts"} & set(check.shared))
        and not any(name.endswith("_users") for name in check.shared))
    together = sum(map(counting, checks)) >= 2
    return lambda check: together and counting(check)


def evaluate_range(
    conn: Warehouse, checks: Sequence[Check], behavior: BehaviorConfig, grain: Grain,
    periods: Sequence[dt.date], outcomes: dict[str, CheckOutcome],
) -> None:
    """Evaluate `checks` on the partitions `periods`, accumulating into `outcomes` in period order.

    Over several partitions, a check with a span form is evaluated for up to SPAN_PARTITIONS partitions in one pass, all such
    checks in one statement over the relations they share (the view is read once for them all,
    not once per check and partition; the set checks read each user's periods once, see
    `_user_periods`). The others run partition by partition, all of a partition's in one query: one
    round trip, and one job on Spark instead of one per check. Examples are fetched only for
    failing checks, from their first failing partition.
    """
    wh = as_warehouse(conn)
    applicable = checks_for(checks, grain)
    if not applicable or not periods:
        return
    periods = sorted(periods)
    results: dict[tuple[int, dt.date], tuple[int, str]] = {}
    spans = _span_forms(applicable, many=len(periods) > 1)
    spanned = [(i, check) for i, check in enumerate(applicable) if spans(check)]
    single = [(i, check) for i, check in enumerate(applicable) if not spans(check)]
    time_type = _fact_time_type(wh, behavior) if any(check.reads_time for _, check in single) else ""
    # A day's distinct users (E2's month of the fact) in an array indexed by the id. Not over a range:
    # there the arrays pushed a 2M x 180 backfill's peak RSS from 2.24 GB to 3.54 GB for no time saved.
    dense = wh.grouping_dense_keys_by_index() if len(periods) == 1 else contextlib.nullcontext()
    with dense:
        for start in range(0, len(periods), SPAN_PARTITIONS) if spanned else ():
            span = Span(behavior, grain, tuple(periods[start:start + SPAN_PARTITIONS]))
            for index, period, violations, detail in wh.query(span_statement(spanned, span)):
                results[(index, period)] = (violations, detail)
        for period in periods if single else ():
            context = period_context(behavior, grain, period, time_type)
            union = "\nUNION ALL\n".join(
                f"SELECT {i} AS check_index, CAST(violations AS BIGINT) AS violations, CAST(detail AS VARCHAR) AS detail"
                f" FROM ({check.violations(context)}) AS check_{i}(violations, detail)"
                for i, check in single)
            for index, violations, detail in wh.query(union):
                results[(index, period)] = (violations, detail)
    for period in periods:
        for i, check in enumerate(applicable):
            outcome = outcomes.setdefault(check.name, CheckOutcome(check))
            outcome.partitions.append(period)
            violations, detail = results.get((i, period), (0, "ok"))
            if violations:
                outcome.failing[period] = (int(violations), detail)
                if check.examples and not outcome.examples:
                    names, rows = wh.query_named(check.examples(period_context(behavior, grain, period, time_type)))
                    outcome.examples = [
                        {"period_start": str(period), **{n: _plain(v) for n, v in zip(names, row)}} for row in rows
                    ]


def _fact_time_type(wh: Warehouse, behavior: BehaviorConfig) -> str:
    """The type of the fact's occurred_at (the source's): how a check orders rows by instant."""
    return wh.table_column_types(sql.fact_table(behavior.name)).get("occurred_at", "TIMESTAMP WITH TIME ZONE")


def _plain(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
