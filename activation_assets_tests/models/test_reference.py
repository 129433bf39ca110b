"""The whole graph against the brute-force reference, on data full of the contract's edge cases.

Two behaviors in one config: integer ids from Parquet (naive UTC nanosecond timestamps, a `where:`
filter) in Asia/Seoul with Monday weeks, and string ids (spaces, unicode) from CSV (timestamps with
offsets) in America/New_York, across a DST change, with Sunday weeks. Neither starts on a week or
month start; both end mid-week and mid-month.
"""

from __future__ import annotations

import datetime as dt

import pytest

from .. import reference
from ..conftest import (
    ACTIVATION_COLUMNS, TRANSITION_COLUMNS, as_set, edge_events, run_graph, table_rows, write_config,
    write_csv_source, write_parquet_source,
)

SEOUL = reference.Spec("Asia/Seoul", dt.date(2025, 1, 8), dt.date(2025, 4, 17), "monday")
NEW_YORK = reference.Spec("America/New_York", dt.date(2025, 2, 19), dt.date(2025, 5, 6), "sunday")
INT_USERS = list(range(1, 36)) + [9_007_199_254_740_993, 2**62 + 7]  # beyond float precision
STR_USERS = [f"user {i}" for i in range(1, 30)] + ["사용자_1", "ünïcødé", "o'brien", "  padded "]
GRAINS = ["daily", "weekly", "monthly"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reference")
    int_rows = edge_events(SEOUL, seed=7, users=INT_USERS)
    str_rows = edge_events(NEW_YORK, seed=11, users=STR_USERS)
    write_parquet_source(directory / "events" / "part-1.parquet", int_rows)
    write_csv_source(directory / "posts.csv", str_rows, "Europe/Berlin")
    config = write_config(directory, [
        {"name": "visited", "source": {"parquet": "events/*.parquet", "where": "event_name = 'visit'"},
         "user_column": "uid", "time_column": "ts", "start_date": SEOUL.start_date,
         "end_date": SEOUL.end_date, "timezone": SEOUL.timezone},
        {"name": "posted", "source": {"csv": "posts.csv"}, "user_column": "author", "time_column": "created",
         "start_date": NEW_YORK.start_date, "end_date": NEW_YORK.end_date, "timezone": NEW_YORK.timezone,
         "week_start": "sunday"},
    ])
    failed_checks = run_graph(config)
    return {"db": directory / "warehouse.duckdb", "failed_checks": failed_checks,
            "visited": (int_rows, SEOUL), "posted": (str_rows, NEW_YORK)}


@pytest.mark.parametrize("behavior", ["visited", "posted"])
@pytest.mark.parametrize("grain", GRAINS)
def test_activation_equals_reference(graph, behavior, grain):
    rows, spec = graph[behavior]
    expected = reference.activation(rows, spec, grain)
    actual = table_rows(graph["db"], f"{behavior}_activation_{grain}")
    assert len(actual) == len(expected)
    assert as_set(actual, ACTIVATION_COLUMNS) == as_set(expected, ACTIVATION_COLUMNS)


@pytest.mark.parametrize("behavior", ["visited", "posted"])
@pytest.mark.parametrize("grain", GRAINS)
def test_transitions_equal_reference(graph, behavior, grain):
    rows, spec = graph[behavior]
    expected = reference.transitions(reference.activation(rows, spec, grain))
    actual = table_rows(graph["db"], f"{behavior}_transitions_{grain}")
    assert as_set(actual, TRANSITION_COLUMNS) == as_set(expected, TRANSITION_COLUMNS)


@pytest.mark.parametrize("behavior", ["visited", "posted"])
@pytest.mark.parametrize("grain", GRAINS)
def test_periods_are_exactly_the_complete_ones(graph, behavior, grain):
    rows, spec = graph[behavior]
    written = {r["period_start"] for r in table_rows(graph["db"], f"{behavior}_firstlast_{grain}")}
    expected = reference.periods(spec, grain)
    # A period with no user yet has no rows, so compare from the first period that has any.
    assert sorted(written) == [p for p in expected if p >= min(written)]
    assert max(written) == expected[-1]


@pytest.mark.parametrize("behavior", ["visited", "posted"])
def test_fact_keeps_valid_rows_once(graph, behavior):
    rows, spec = graph[behavior]
    fact = table_rows(graph["db"], f"fact_{behavior}")
    assert len(fact) == reference.fact_rows(rows, spec)
    assert all(r["period_start"] == r["activity_date"] for r in fact)
    assert all(reference.local_date(r["occurred_at"], spec.timezone) == r["activity_date"] for r in fact
               if not isinstance(r["occurred_at"], str))


def test_user_id_types_are_kept(graph):
    import duckdb

    with duckdb.connect(str(graph["db"]), read_only=True) as conn:
        def user_type(table):
            return conn.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_name = ? AND column_name = 'user_id'",
                [table]).fetchone()[0]
        assert {user_type(f"{t}visited{s}") for t, s in [("fact_", ""), ("", "_firstlast_daily"),
                                                          ("", "_activation_weekly")]} == {"BIGINT"}
        assert {user_type(f"{t}posted{s}") for t, s in [("fact_", ""), ("", "_activation_monthly")]} == {"VARCHAR"}
    users = {r["user_id"] for r in table_rows(graph["db"], "visited_activation_monthly")}
    assert 2**62 + 7 in users and 9_007_199_254_740_993 in users
    names = {r["user_id"] for r in table_rows(graph["db"], "posted_activation_monthly")}
    assert {"사용자_1", "o'brien", "  padded "} <= names


def test_every_check_passed_on_clean_data(graph):
    assert graph["failed_checks"] == 0
