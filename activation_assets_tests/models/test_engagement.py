"""Rolling engagement (DAU/WAU/MAU, Duolingo's daily states, stickiness) against the brute-force
reference written from the contract, on data with gaps longer than the month window, returns on the
window edges, users whose first day is start_date, a DST change, and non-default windows."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from .. import reference
from ..conftest import (
    as_set, edge_events, local_instant, materialize, run_graph, table_rows, write_config, write_csv_source,
    write_parquet_source,
)

SEOUL = reference.Spec("Asia/Seoul", dt.date(2025, 1, 1), dt.date(2025, 4, 30))  # W = 7, M = 28 (defaults)
NEW_YORK = reference.Spec("America/New_York", dt.date(2025, 2, 20), dt.date(2025, 4, 20))  # DST on 03-09
NY_WEEK, NY_MONTH = 3, 10

# Gaps between consecutive active days, around the windows' edges: W-1, W, W+1, M-1, M, M+1 days.
SEOUL_GAPS = [6, 7, 8, 27, 28, 29]
NY_GAPS = [2, 3, 4, 9, 10, 11]


def _returns(user, spec: reference.Spec, first_offset: int, gaps: list[int]) -> tuple[list[tuple], list[dt.date]]:
    """Rows of a user active on start_date + first_offset and then after each gap (alternately at
    local midnight and one second before the next), and the active days."""
    day = spec.start_date + dt.timedelta(days=first_offset)
    days = [day]
    for gap in gaps:
        day += dt.timedelta(days=gap)
        days.append(day)
    rows = [(user, local_instant(d, 0 if i % 2 else 86399, spec.timezone)) for i, d in enumerate(days)]
    return rows, days


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    directory = tmp_path_factory.mktemp("engagement")
    seoul_rows = edge_events(SEOUL, seed=5, users=list(range(1, 40)))
    edges = {}
    for user, offset, gaps in [(1001, 0, SEOUL_GAPS), (1002, 2, [70]), (1003, 5, [63]), (1004, 10, [62, 1])]:
        rows, edges[user] = _returns(user, SEOUL, offset, gaps)
        seoul_rows += rows
    ny_rows = edge_events(NEW_YORK, seed=9, users=[f"u{i}" for i in range(1, 30)])
    for user, offset, gaps in [("edge a", 0, NY_GAPS), ("edge b", 3, [30, 1, 1])]:
        rows, edges[user] = _returns(user, NEW_YORK, offset, gaps)
        ny_rows += rows
    write_parquet_source(directory / "events" / "part-1.parquet", seoul_rows)
    write_csv_source(directory / "posts.csv", ny_rows, "Europe/Berlin")
    config = write_config(directory, [
        {"name": "visited", "source": {"parquet": "events/*.parquet", "where": "event_name = 'visit'"},
         "user_column": "uid", "time_column": "ts", "start_date": SEOUL.start_date, "end_date": SEOUL.end_date,
         "timezone": SEOUL.timezone, "grains": ["daily"]},
        {"name": "posted", "source": {"csv": "posts.csv"}, "user_column": "author", "time_column": "created",
         "start_date": NEW_YORK.start_date, "end_date": NEW_YORK.end_date, "timezone": NEW_YORK.timezone,
         "grains": ["daily", "monthly"], "engagement": {"week_days": NY_WEEK, "month_days": NY_MONTH}},
    ])
    failed_checks = run_graph(config)
    return {"db": directory / "warehouse.duckdb", "config": config, "failed_checks": failed_checks, "edges": edges,
            "visited": (seoul_rows, SEOUL, 7, 28), "posted": (ny_rows, NEW_YORK, NY_WEEK, NY_MONTH)}


ROW_COLUMNS = ["period_start", "user_id", "days_seen_bits", "engagement_state", "prev_engagement_state"]
BEHAVIORS = ["visited", "posted"]


def _rounded(rows: list[dict]) -> list[dict]:
    return [{k: round(v, 12) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def test_every_check_passed(graph):
    assert graph["failed_checks"] == 0


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_daily_activation_carries_the_bits_and_states_of_the_reference(graph, behavior):
    rows, spec, week, month = graph[behavior]
    expected = reference.engagement_rows(rows, spec, week, month)
    actual = table_rows(graph["db"], f"{behavior}_activation_daily")
    assert len(actual) == len(expected)
    assert as_set(actual, ROW_COLUMNS) == as_set(expected, ROW_COLUMNS)


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_engagement_daily_equals_reference(graph, behavior):
    rows, spec, week, month = graph[behavior]
    expected = _rounded(reference.engagement_daily(rows, spec, week, month))
    actual = _rounded(table_rows(graph["db"], f"{behavior}_engagement_daily"))
    first = min(r["period_start"] for r in actual)  # days before anyone is seen have no partition rows
    expected = [r for r in expected if r["period_start"] >= first]
    key = lambda r: r["period_start"]  # noqa: E731
    assert sorted(actual, key=key) == sorted(expected, key=key)


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_engagement_transitions_equal_reference(graph, behavior):
    rows, spec, week, month = graph[behavior]
    grouped = reference.Counter((r["period_start"], r["prev_engagement_state"], r["engagement_state"])
                                for r in reference.engagement_rows(rows, spec, week, month))
    actual = {(r["period_start"], r["from_state"], r["to_state"]): r["users"]
              for r in table_rows(graph["db"], f"{behavior}_engagement_transitions_daily")}
    assert actual == dict(grouped)


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_stickiness_equals_reference(graph, behavior):
    rows, spec, week, month = graph[behavior]
    columns = ["period_start", "window", "active_days", "users"]
    expected = as_set(reference.stickiness(rows, spec, week, month), columns)
    assert as_set(table_rows(graph["db"], f"{behavior}_stickiness_daily"), columns) == expected


def _state(graph, behavior: str, user, day: dt.date) -> tuple[str, str | None]:
    row, = table_rows(graph["db"], f"{behavior}_activation_daily",
                      f"user_id = {user!r} AND period_start = DATE '{day}'".replace('"', "'"))
    return row["engagement_state"], row["prev_engagement_state"]


def test_returns_on_the_window_edges_worked_by_hand(graph):
    """A return after g days (the previous active day is d - g): current while d - g is in the week
    [d-W+1, d-1], reactivated while it is in [d-M+1, d-W], resurrected beyond; the day before the
    return is at_risk_wau, at_risk_mau or dormant by the same edges, one day nearer."""
    days = graph["edges"][1001]
    assert days[0] == SEOUL.start_date and _state(graph, "visited", 1001, days[0]) == ("new", None)
    expected = {6: "current", 7: "reactivated", 8: "reactivated", 27: "reactivated", 28: "resurrected",
                29: "resurrected"}
    for gap, day in zip(SEOUL_GAPS, days[1:]):
        state, _ = _state(graph, "visited", 1001, day)
        assert state == expected[gap], (gap, day)
        _, before = _state(graph, "visited", 1001, day)
        # On d - 1 the last active day is g - 1 days back: in its week while g - 1 <= W - 1.
        assert before == {6: "at_risk_wau", 7: "at_risk_wau", 8: "at_risk_mau", 27: "at_risk_mau",
                          28: "at_risk_mau", 29: "dormant"}[gap], (gap, day)
    ny = graph["edges"]["edge a"]
    assert [_state(graph, "posted", "edge a", d)[0] for d in ny[1:]] == [
        "current", "reactivated", "reactivated", "reactivated", "resurrected", "resurrected"]  # W = 3, M = 10


def test_the_bit_history_keeps_63_days_and_no_more(graph):
    """A return after 63 days finds its first day just shifted out (bit 63 does not exist), after 62
    days still in (bit 62); both are resurrected with the default month, and nothing overflows."""
    first, back = graph["edges"][1003]
    row, = table_rows(graph["db"], "visited_activation_daily", f"user_id = 1003 AND period_start = DATE '{back}'")
    assert row["days_seen_bits"] == 1 and row["engagement_state"] == "resurrected"
    first, back, next_day = graph["edges"][1004]
    row, = table_rows(graph["db"], "visited_activation_daily", f"user_id = 1004 AND period_start = DATE '{back}'")
    assert row["days_seen_bits"] == 1 + 2 ** 62
    row, = table_rows(graph["db"], "visited_activation_daily",
                      f"user_id = 1004 AND period_start = DATE '{next_day}'")
    assert row["days_seen_bits"] == 3 and row["engagement_state"] == "current"


def test_daily_numbers_are_consistent_by_hand(graph):
    """Spot checks that need no reference: stickiness = dau / mau; the first day is all new."""
    rows = table_rows(graph["db"], "visited_engagement_daily")
    first = min(rows, key=lambda r: r["period_start"])
    assert first["period_start"] == SEOUL.start_date and first["new"] == first["dau"] == first["users_ever"] > 0
    for r in rows:
        assert math.isclose(r["dau_mau"], r["dau"] / r["mau"])


def test_each_engagement_asset_materializes_alone(graph):
    """The three assets are one step (a multi-asset) but each can be materialized on its own: only
    it is written, only its checks run, and its rows are what the whole step wrote."""
    import duckdb

    day = SEOUL.start_date + dt.timedelta(days=40)
    tables = {name: f"visited_{name}_daily" for name in ("engagement_transitions", "engagement", "stickiness")}
    where = f"period_start = DATE '{day}'"
    written = {name: as_set(table_rows(graph["db"], table, where), list(table_rows(graph["db"], table, where)[0]))
               for name, table in tables.items()}
    try:
        for alone in tables:
            # Every table's rows of the day made wrong, but what `alone` reads (the engagement
            # numbers are summed off the stored transitions).
            wrong = [name for name in tables if not (alone == "engagement" and name == "engagement_transitions")]
            with duckdb.connect(str(graph["db"])) as conn:
                for name in wrong:
                    column = "dau" if name == "engagement" else "users"
                    conn.execute(f"UPDATE {tables[name]} SET {column} = {column} + 1000 WHERE {where}")
            result = materialize(graph["config"], [tables[alone]], day.isoformat())
            assert result.success
            assert {e.asset_key.to_user_string() for e in result.get_asset_check_evaluations()} == {tables[alone]}
            for name in wrong:
                rows = table_rows(graph["db"], tables[name], where)
                assert (as_set(rows, list(rows[0])) == written[name]) == (name == alone), (alone, name)
    finally:  # leave the module's graph as the whole step wrote it
        assert materialize(graph["config"], list(tables.values()), day.isoformat()).success


@pytest.mark.parametrize("week, month", [(7, 28), (3, 10), (1, 2), (1, 62), (61, 62)])
def test_the_profile_tells_both_days_activity_as_the_bits_do(week, month):
    """The engagement profile keeps a user's window counts ending on d and four of their bits, not
    the bits: read off it, each day's three activity predicates (d and d - 1) must equal the ones
    read off the bits, for every bit history (random ones, and every single bit set or cleared)."""
    import random

    import duckdb

    from activation_assets.models import sql

    rng = random.Random(week * 100 + month)
    everything = 2 ** sql.BITS_KEPT - 1
    histories = ([rng.getrandbits(sql.BITS_KEPT) for _ in range(3000)] + [0, everything]
                 + [1 << i for i in range(sql.BITS_KEPT)] + [everything ^ (1 << i) for i in range(sql.BITS_KEPT)])
    profile = sql.engagement_profile_select("users", [dt.date(2025, 3, 10)], week, month)
    from_bits = [p for back in (0, 1) for p in sql.day_activity("days_seen_bits", back, week, month)]
    from_profile = [p for back in (0, 1) for p in sql.profile_activity(back, week, month)]
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE users AS SELECT DATE '2025-03-10' AS period_start, DATE '2025-01-01' AS"
                     " first_active_period, CAST(b AS BIGINT) AS days_seen_bits FROM (VALUES "
                     + ", ".join(f"({h})" for h in histories) + ") AS v(b)")
        # One row per history: the profile's grouping, with the history kept alongside.
        per_history = profile.replace("count(*) AS users", "days_seen_bits AS history")
        rows = conn.execute(
            f"SELECT history, {', '.join(from_profile)} FROM ({per_history}) ORDER BY history").fetchall()
        expected = conn.execute(
            f"SELECT days_seen_bits, {', '.join(from_bits)} FROM users ORDER BY days_seen_bits").fetchall()
    assert len(rows) == len(set(histories)) and rows == expected
