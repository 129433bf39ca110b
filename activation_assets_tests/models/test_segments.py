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
    columns = ["period_start", "user_id", "state", "prev_state", name]
    got = [{c: r[c] for c in columns} for r in _table(config, f"{behavior}_activation_{grain}")]
    assert _rounded(got) == _rounded([{c: r[c] for c in columns} for r in expected])
    # The state carries seg(u, p-1) of the users active in p too (what the segment transitions group by).
    state = ["period_start", "user_id", name, f"prev_{name}"]
    got = [{c: r[c] for c in state} for r in _table(config, f"{behavior}_firstlast_{grain}")]
    active = ("retained", "reactivated")
    assert _rounded(got) == _rounded([{**{c: r[c] for c in state}, f"prev_{name}": r[f"prev_{name}"] if r["state"]
                                       in active else None} for r in expected])
    assert _rounded(_table(config, f"{behavior}_segment_transitions_{grain}")) == _rounded(
        reference.segment_transitions(expected, name))
    assert _rounded(_table(config, f"{behavior}_segment_growth_{grain}")) == _rounded(
        reference.segment_growth(expected, name))
    if grain == "daily":
        assert _rounded(_table(config, f"{behavior}_segment_engagement_daily")) == _rounded(
            reference.segment_engagement(rows, SPEC, name, values))


def test_the_activation_relation_gains_one_column_per_segment(graph):
    """The contract's activation columns (the daily grain's engagement ones included), then N."""
    config, _ = graph
    contract = ["period_start", "user_id", "state", "prev_state", "first_active_period", "last_active_period",
                "streak", "inactive_streak", "return_gap", "active_periods"]
    daily = ["days_seen_bits", "engagement_state", "prev_engagement_state"]
    import duckdb

    with duckdb.connect(str(config.parent / "warehouse.duckdb"), read_only=True) as conn:
        for grain in GRAINS:
            names = [r[0] for r in conn.execute(f"DESCRIBE posted_activation_{grain}").fetchall()]
            assert names == contract + (daily if grain == "daily" else []) + ["plan"], grain


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


# --- incremental: corrections and changed settings ------------------------------------------------------

SEOUL = reference.Spec("Asia/Seoul", dt.date(2025, 3, 5), dt.date(2025, 4, 20), "monday")


def _layer(database) -> dict[str, list]:
    """Every table and view of the layer (not the records), its rows as sorted text."""
    import duckdb

    with duckdb.connect(str(database), read_only=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name NOT LIKE '\\_%' ESCAPE '\\'"
        ).fetchall()]
        return {n: sorted(map(repr, conn.execute(f'SELECT * FROM "{n}"').fetchall())) for n in names}


def _fresh(tmp_path, rows, late=(), **behavior) -> dict[str, list]:
    from ..conftest import small_behavior, write_parquet_source

    directory = tmp_path / "fresh"
    config = small_behavior(directory, SEOUL, rows, **behavior)
    if late:
        _write_late(directory, late)
    assert cli.main(["materialize", "--config", str(config)]) == 0
    return _layer(directory / "warehouse.duckdb")


def _write_late(directory, late: list[tuple]) -> None:
    pd.DataFrame({
        "uid": pd.array([u for u, _, _ in late], dtype="Int64"),
        "ts": pd.to_datetime([t.replace(tzinfo=None) for _, t, _ in late]),
        "event_name": "visit", "platform": [p for *_, p in late],
    }).to_parquet(directory / "events" / "part-2-late.parquet", index=False)


def test_a_late_row_that_changes_a_value_is_propagated_like_any_change(tmp_path):
    """A late file with rows that change users' values (one of them to a value never seen) on a past
    day: `activation materialize` finds the changed day and rebuilds from it; the tables equal a
    fresh run over both files."""
    from ..conftest import local_instant, small_behavior

    rows = edge_events(SEOUL, seed=8, users=list(range(1, 26)))
    segments = [{"column": "platform"}]
    config = small_behavior(tmp_path, SEOUL, rows, segments=segments)
    assert cli.main(["materialize", "--config", str(config)]) == 0
    day = dt.date(2025, 3, 20)
    late = [(3, local_instant(day, 86398, SEOUL.timezone), "tablet"),
            (4, local_instant(day, 86398, SEOUL.timezone), "tablet")]
    _write_late(tmp_path, late)
    assert cli.main(["materialize", "--config", str(config)]) == 0
    built = _layer(tmp_path / "warehouse.duckdb")
    assert any("tablet" in row for row in built["visited_segment_transitions_daily"])
    assert built == _fresh(tmp_path, rows, late, segments=segments)


def test_changing_the_segments_rebuilds_what_depends_on_them(tmp_path):
    """New segments (another name, `values:`) and then none: each time the tables equal a fresh run
    with the settings of that time, and no table of the old segments is left."""
    import yaml

    from ..conftest import small_behavior

    rows = edge_events(SEOUL, seed=4, users=list(range(1, 26)))
    config = small_behavior(tmp_path, SEOUL, rows, segments=[{"column": "platform"}])
    assert cli.main(["materialize", "--config", str(config)]) == 0
    for segments in ([{"name": "device", "column": "platform", "values": ["ios"]}], []):
        document = yaml.safe_load(config.read_text())
        document["behaviors"][0]["segments"] = segments
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        assert cli.main(["materialize", "--config", str(config)]) == 0
        built = _layer(tmp_path / "warehouse.duckdb")
        fresh = _fresh(tmp_path / str(len(segments)), rows, segments=segments)
        assert {k: v for k, v in built.items() if v} == {k: v for k, v in fresh.items() if v}
        assert ("visited_segment_transitions_daily" in fresh) == bool(segments)


# --- the report: where the change came from -------------------------------------------------------------


def _csv(page: str, name: str) -> list[dict]:
    import base64
    import csv
    import io
    import re

    encoded, = re.findall(rf"download='\w+_{name}.csv' href='data:text/csv;charset=utf-8;base64,([^']+)'", page)
    return list(csv.DictReader(io.StringIO(base64.b64decode(encoded).decode())))


def test_the_report_says_where_the_change_came_from(graph, tmp_path):
    """Each detail page has, per segment, active users per value over time and the latest period's
    change per value (the biggest first), with the reference's numbers in their CSV; the landing page
    names the values that changed most."""
    from activation_assets.config import load_config
    from activation_assets.report.html import write_reports

    config, sources = graph
    name, values, rows = sources["visited"]
    index, _ = write_reports(load_config(config), [load_config(config).behavior("visited")], None, tmp_path / "r")
    for grain in GRAINS:
        page = (index.parent / f"visited_{grain}.html").read_text()
        assert f"data-chart='segment_active_{name}'" in page and f"data-chart='segment_change_{name}'" in page
        growth = reference.segment_growth(reference.segmented_activation(rows, SPEC, grain, name, values), name)
        latest = max(r["period_start"] for r in growth)
        expected = {(r["value"] or "(none)"): r for r in growth if r["period_start"] == latest}
        change = _csv(page, f"segment_change_{name}")
        assert {r["value"]: (int(r["active_change"]), int(r["moved_in"]), int(r["churned"])) for r in change} == {
            v: (r["active_change"], r["moved_in"], r["churned"]) for v, r in expected.items()}
        sizes = [abs(int(r["active_change"])) for r in change]
        assert sizes == sorted(sizes, reverse=True)  # the biggest contribution first
        active = _csv(page, f"segment_active_{name}")
        assert sorted((r["period_start"], r["value"], int(r["active"])) for r in active) == sorted(
            (str(r["period_start"]), r["value"] or "(none)", r["active"]) for r in growth)
    landing = index.read_text()
    weekly = reference.segment_growth(reference.segmented_activation(rows, SPEC, "weekly", name, values), name)
    latest = max(r["period_start"] for r in weekly)
    top = max((r for r in weekly if r["period_start"] == latest), key=lambda r: abs(r["active_change"]))
    assert f"week of {latest}" in landing and f"{top['value'] or '(none)'} {top['active_change']:+,}" in landing


def test_fifty_values_read_as_the_top_eleven_and_the_rest():
    """With 50 values the charts keep the eleven that matter most and sum the others, so that the
    values still add up to the whole."""
    from activation_assets.report import html as report

    rng = random.Random(3)
    day = pd.Timestamp("2025-03-03")
    frame = pd.DataFrame([{"period_start": day, "value": f"v{i:02d}", "active": rng.randint(0, 900),
                           "active_prev": rng.randint(0, 900), "new": rng.randint(0, 50),
                           "reactivated": rng.randint(0, 50), "churned": rng.randint(0, 90),
                           "moved_in": rng.randint(0, 9), "moved_out": rng.randint(0, 9)} for i in range(50)])
    frame["active_change"] = frame["active"] - frame["active_prev"]
    ranked = report.biggest_changes(frame)
    folded = report.biggest_changes(report.fold_values(frame, list(ranked["value"][:11])))
    assert len(folded) == 12 and "the other 39 values" in set(folded["value"])
    for column in report.SEGMENT_COUNTS:
        assert folded[column].sum() == frame[column].sum()
    top = sorted(frame["active_change"].abs(), reverse=True)[:11]
    assert sorted(folded[~folded["value"].str.startswith("the other")]["active_change"].abs(), reverse=True) == top
    assert report.segment_change_chart(folded, "value")[:4] == b"\x89PNG"
