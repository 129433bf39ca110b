"""Segments against the brute-force reference written from the contract (`reference.segment_*`): the
activation relation's segment columns, the segment transitions, the segment growth and the segment
engagement, on every grain, for a text column (Parquet, naive UTC) and an integer one read from CSV
(offsets in another zone) with `values:`.

The data has the edges that matter, and the test asserts that each one occurs: a user whose value
changes inside a period (the latest wins), two rows at the same instant with different values, null
values before a user's first non-null one, a value changed while the user is away (a reactivation in
the new value, not a move), values mapped to 'other', a DST change (America/New_York, 2025-03-09), and
weekly periods that start before start_date.
"""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from activation_assets import cli

from .. import reference
from ..conftest import edge_events, run_graph, table_rows, write_config

SPEC = reference.Spec("America/New_York", dt.date(2025, 2, 20), dt.date(2025, 4, 6), "monday")  # a Thursday
USERS = list(range(1, 41))
PLATFORMS = ["android", "ios", "web"]
TIERS = [1, 2]  # `values:` of the integer segment: 3 and 4 become 'other'
GRAINS = ("daily", "weekly", "monthly")


def segment_rows(seed: int) -> list[tuple]:
    """(user, when, platform, tier) rows: each user has a home platform and tier that sometimes
    change for good; some rows are on another platform, some have none; users 5, 10, ... have no
    values on their first rows; a few events are repeated at the same instant on another platform."""
    rng = random.Random(seed)
    rows = []
    home: dict = {}
    seen: dict = {}
    for user, when in edge_events(SPEC, seed, USERS):
        if user is None or when is None:
            rows.append((user, when, "ios", 1))
            continue
        platform, tier = home.setdefault(user, (rng.choice(PLATFORMS), rng.randint(1, 4)))
        if rng.random() < 0.08:
            platform = rng.choice(PLATFORMS)
        if rng.random() < 0.05:
            tier = rng.randint(1, 4)
        home[user] = (platform, tier)
        seen[user] = seen.get(user, 0) + 1
        if user % 5 == 0 and seen[user] <= 3:
            rows.append((user, when, None, None))
            continue
        shown = rng.choice(PLATFORMS) if rng.random() < 0.1 else None if rng.random() < 0.1 else platform
        rows.append((user, when, shown, None if rng.random() < 0.1 else tier))
    timed = [r for r in rows if r[0] is not None and r[1] is not None and r[2] is not None]
    for user, when, platform, tier in rng.sample(timed, 12):  # the same instant, another value
        rows.append((user, when, next(p for p in PLATFORMS if p != platform), tier))
    return rows


def _write_sources(directory, rows: list[tuple]) -> None:
    (directory / "events").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "uid": pd.array([u for u, *_ in rows], dtype="Int64"),
        "ts": pd.to_datetime([None if t is None else t.replace(tzinfo=None) for _, t, *_ in rows]),
        "event_name": "visit",
        "platform": [p for _, _, p, _ in rows],
    }).to_parquet(directory / "events" / "part-1.parquet", index=False)
    berlin = ZoneInfo("Europe/Berlin")
    pd.DataFrame({
        "author": [None if u is None else f"a{u}" for u, *_ in rows],
        "created": [None if t is None else t.astimezone(berlin).isoformat() for _, t, *_ in rows],
        "tier": pd.array([t for *_, t in rows], dtype="Int64"),
    }).to_csv(directory / "posts.csv", index=False)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    directory = tmp_path_factory.mktemp("segments")
    rows = segment_rows(seed=31)
    _write_sources(directory, rows)
    window = {"start_date": SPEC.start_date, "end_date": SPEC.end_date, "timezone": SPEC.timezone,
              "week_start": SPEC.week_start}
    config = write_config(directory, [
        {"name": "visited", "source": {"parquet": "events/*.parquet", "where": "event_name = 'visit'"},
         "user_column": "uid", "time_column": "ts", **window, "segments": [{"column": "platform"}]},
        {"name": "posted", "source": {"csv": "posts.csv"}, "user_column": "author", "time_column": "created",
         **window, "segments": [{"name": "plan", "column": "tier", "values": TIERS}]},
    ])
    assert run_graph(config) == 0
    return config, {
        "visited": ("platform", None, [(u, t, p) for u, t, p, _ in rows]),
        "posted": ("plan", [str(t) for t in TIERS],
                   [(None if u is None else f"a{u}", t, tier) for u, t, _, tier in rows]),
    }


def _rounded(rows: list[dict]) -> set[tuple]:
    return {tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in row.items())) for row in rows}


def _table(config, table: str) -> list[dict]:
    return table_rows(config.parent / "warehouse.duckdb", table)


@pytest.mark.parametrize("behavior", ["visited", "posted"])
@pytest.mark.parametrize("grain", GRAINS)
def test_the_segment_relations_equal_the_reference(graph, behavior, grain):
    config, sources = graph
    name, values, rows = sources[behavior]
    expected = reference.segmented_activation(rows, SPEC, grain, name, values)
    columns = ["period_start", "user_id", "state", "prev_state", name, f"prev_{name}"]
    got = [{c: r[c] for c in columns} for r in _table(config, f"{behavior}_activation_{grain}")]
    assert _rounded(got) == _rounded([{c: r[c] for c in columns} for r in expected])
    assert _rounded(_table(config, f"{behavior}_segment_transitions_{grain}")) == _rounded(
        reference.segment_transitions(expected, name))
    assert _rounded(_table(config, f"{behavior}_segment_growth_{grain}")) == _rounded(
        reference.segment_growth(expected, name))
    if grain == "daily":
        assert _rounded(_table(config, f"{behavior}_segment_engagement_daily")) == _rounded(
            reference.segment_engagement(rows, SPEC, name, values))


def test_the_data_has_the_edges_that_matter(graph):
    """Each edge the module docstring names occurs in the reference's rows, so the comparison covers it."""
    _, sources = graph
    name, values, rows = sources["visited"]
    weekly = reference.segmented_activation(rows, SPEC, "weekly", name, values)
    daily = reference.segmented_activation(rows, SPEC, "daily", name, values)
    # A value changed while away: reactivated in another value than the one they left with.
    assert any(r["state"] == "reactivated" and r[f"prev_{name}"] not in (None, r[name]) for r in weekly)
    # A move while active, and a value that changes within a week (days of one week disagree).
    assert any(r["state"] == "retained" and r[f"prev_{name}"] != r[name] for r in weekly)
    by_week: dict = {}
    for r in daily:
        if r["state"] != "inactive" and r[name] is not None:
            week = reference.period_of(r["period_start"], "weekly", SPEC.week_start)
            by_week.setdefault((r["user_id"], week), set()).add(r[name])
    assert any(len(v) > 1 for v in by_week.values())
    # Two rows at the same instant with different values, and users without a value at first.
    instants: dict = {}
    for user, when, value in rows:
        if user is not None and when is not None and value is not None:
            instants.setdefault((user, when), set()).add(value)
    assert any(len(v) > 1 for v in instants.values())
    assert any(r["state"] != "inactive" and r[name] is None for r in daily)
    # 'other', weekly periods from before start_date, and the DST change inside the window.
    _, plan_values, post_rows = sources["posted"]
    assert any(r["plan"] == "other" for r in reference.segmented_activation(post_rows, SPEC, "monthly", "plan",
                                                                              plan_values))
    assert reference.periods(SPEC, "weekly")[0] < SPEC.start_date
    assert SPEC.start_date < dt.date(2025, 3, 9) < SPEC.end_date


def test_every_segment_check_passes_on_the_built_graph(graph):
    config, _ = graph
    assert cli.main(["check", "--config", str(config)]) == 0


def test_the_segment_values_add_up_to_the_whole(graph):
    """Every count of the segment growth summed over a segment's values is the growth table's."""
    config, _ = graph
    for grain in GRAINS:
        whole = {r["period_start"]: r for r in _table(config, f"visited_growth_{grain}")}
        sums: dict = {}
        for r in _table(config, f"visited_segment_growth_{grain}"):
            entry = sums.setdefault(r["period_start"], dict.fromkeys(("active", "churned", "users_ever", "new"), 0))
            for k in entry:
                entry[k] += r[k]
        assert sums and all(all(sums[p][k] == whole[p][k] for k in sums[p]) for p in sums)
