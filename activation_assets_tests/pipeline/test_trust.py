"""Ways the layer could be silently wrong, each pinned by a test that failed before its fix."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from activation_assets import cli
from activation_assets.models.sql import DEFINITIONS, PARTITION_LOG, SOURCE_FILES

from .. import reference
from ..conftest import (
    ACTIVATION_COLUMNS, as_set, edge_events, failure_message, materialize, small_behavior, table_rows, write_config,
)

START, END = dt.date(2025, 3, 3), dt.date(2025, 3, 16)


def _events() -> pd.DataFrame:
    times = pd.date_range("2025-03-03 01:00", "2025-03-16 22:00", freq="5h")
    return pd.DataFrame({
        "user_id": [f"u{i % 11}" for i in range(len(times))],
        "occurred_at": times,
        "country": [["KR", "JP", "US"][i % 3] for i in range(len(times))],
        "device": [["ios", "android"][i % 2] for i in range(len(times))],
    })


def _fact(database) -> list[dict]:
    with duckdb.connect(str(database), read_only=True) as conn:
        cursor = conn.execute("SELECT * FROM fact_visited ORDER BY ALL")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _write(kind: str, directory, frame: pd.DataFrame) -> dict:
    if kind == "parquet":
        (directory / "events").mkdir(exist_ok=True)
        frame.to_parquet(directory / "events" / "part-1.parquet", index=False)
        return {"parquet": "events/*.parquet"}
    if kind == "csv":
        frame.to_csv(directory / "events.csv", index=False)
        return {"csv": "events.csv"}
    with duckdb.connect(str(directory / "warehouse.duckdb")) as conn:
        conn.register("frame", frame)
        conn.execute("CREATE OR REPLACE TABLE raw_events AS SELECT * FROM frame")
        conn.execute("CREATE OR REPLACE VIEW events AS SELECT * FROM raw_events")
    return {"table": "events"}


@pytest.mark.parametrize("kind", ["parquet", "csv", "table"])
def test_a_reordered_source_gives_the_same_fact(tmp_path, kind):
    """Re-exported with `device` before `country`, the source must not move values across columns."""
    frame = _events()
    source = _write(kind, tmp_path, frame)
    config = write_config(tmp_path, [{"name": "visited", "source": source, "start_date": START, "end_date": END}])
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(config, ["fact_visited"], str(START), str(END), instance).success
    before = _fact(tmp_path / "warehouse.duckdb")
    assert {row["country"] for row in before} == {"KR", "JP", "US"}

    _write(kind, tmp_path, frame[["user_id", "occurred_at", "device", "country"]])
    assert materialize(config, ["fact_visited"], str(START), str(END), instance).success
    assert _fact(tmp_path / "warehouse.duckdb") == before


# --- a changed window -----------------------------------------------------------------------------

# Four Monday weeks; March, which starts before start_date, is the one complete month.
WINDOW = reference.Spec("Asia/Seoul", dt.date(2025, 3, 10), dt.date(2025, 4, 6), "monday")


def _every_table(database) -> dict[str, list[tuple]]:
    """Every table, the partition log and the recorded settings included, as sorted rows.

    Left out: when a partition was written (it differs from run to run; what it holds must not),
    and the source's path (the two runs read the same files through two directories)."""
    left_out = {PARTITION_LOG: "EXCLUDE (written_at)", DEFINITIONS: "EXCLUDE (source)"}
    with duckdb.connect(str(database), read_only=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
                  if r[0] != SOURCE_FILES]
        out = {}
        for t in tables:
            # By column name: a record migrated from an older version has its added columns last.
            cursor = conn.execute(f'SELECT * {left_out.get(t, "")} FROM "{t}"')
            names = [d[0] for d in cursor.description]
            out[t] = sorted(repr(sorted(zip(names, map(repr, row)))) for row in cursor.fetchall())
        return out


def _cli_materialize(config, home, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir(exist_ok=True)
    assert cli.main(["materialize", "--config", str(config)]) == 0


def _assert_equals_a_fresh_run(config, tmp_path, monkeypatch):
    """Every table of `config`'s database equals a fresh run of the same config over the same files
    (in tmp_path/fresh, returned)."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "activation.yaml").write_text(config.read_text())
    (fresh / "events").symlink_to(config.parent / "events")
    _cli_materialize(fresh / "activation.yaml", tmp_path / "home-fresh", monkeypatch)
    got, want = _every_table(config.parent / "warehouse.duckdb"), _every_table(fresh / "warehouse.duckdb")
    assert sorted(got) == sorted(want)
    for table in want:
        assert got[table] == want[table], table
    return fresh


@pytest.mark.slow
@pytest.mark.parametrize("change", [
    {"start_date": dt.date(2025, 3, 20)},  # 10 days later, a Thursday: the first week now starts mid-week
    {"end_date": dt.date(2025, 4, 3)},     # 3 days earlier, a Thursday: that week is no longer complete
    {"timezone": "UTC", "week_start": "sunday"},
    # A new `where:` reads other rows from the same files: every fact day changes.
    {"source": {"parquet": "events/*.parquet", "where": "event_name = 'visit' AND uid % 5 <> 0"}},
    # New rolling windows: every engagement state of the daily grain changes.
    {"engagement": {"week_days": 3, "month_days": 10}},
])
def test_a_changed_window_gives_what_a_fresh_run_gives(tmp_path, monkeypatch, change):
    rows = edge_events(WINDOW, seed=41, users=list(range(1, 25)))
    changed = tmp_path / "changed"
    config = small_behavior(changed, WINDOW, rows)
    _cli_materialize(config, tmp_path / "home-changed", monkeypatch)
    document = yaml.safe_load(config.read_text())
    document["behaviors"][0].update(change)
    config.write_text(yaml.safe_dump(document))
    _cli_materialize(config, tmp_path / "home-changed", monkeypatch)

    fresh = _assert_equals_a_fresh_run(config, tmp_path, monkeypatch)
    # And the fresh run itself is right: the weekly states match the brute-force reference.
    spec = reference.Spec(document["behaviors"][0]["timezone"], document["behaviors"][0]["start_date"],
                          document["behaviors"][0]["end_date"], document["behaviors"][0]["week_start"])
    if "source" in change:
        rows = [r for r in rows if r[0] is not None and r[0] % 5 != 0]
    assert as_set(table_rows(fresh / "warehouse.duckdb", "visited_activation_weekly"), ACTIVATION_COLUMNS) == as_set(
        reference.activation(rows, spec, "weekly"), ACTIVATION_COLUMNS)
    if "engagement" in change:
        windows = (change["engagement"]["week_days"], change["engagement"]["month_days"])
        columns = ["period_start", "user_id", "days_seen_bits", "engagement_state", "prev_engagement_state"]
        assert as_set(table_rows(changed / "warehouse.duckdb", "visited_activation_daily"), columns) == as_set(
            reference.engagement_rows(rows, spec, *windows), columns)


@pytest.mark.slow
def test_a_database_from_before_the_bits_is_rebuilt_to_what_a_fresh_run_gives(tmp_path, monkeypatch):
    """A daily FirstLast written before days_seen_bits existed (and settings recorded without the
    engagement windows): the next materialize drops it, builds the daily grain again, and every
    table equals a fresh run; the other grains are kept."""
    rows = edge_events(WINDOW, seed=43, users=list(range(1, 25)))
    old = tmp_path / "old"
    config = small_behavior(old, WINDOW, rows)
    _cli_materialize(config, tmp_path / "home-old", monkeypatch)
    with duckdb.connect(str(old / "warehouse.duckdb")) as conn:
        conn.execute("DROP VIEW visited_activation_daily")
        conn.execute("ALTER TABLE visited_firstlast_daily DROP COLUMN days_seen_bits")
        conn.execute(f"ALTER TABLE {DEFINITIONS} DROP COLUMN engagement")
        weekly_written = conn.execute(f"SELECT max(written_at) FROM {PARTITION_LOG}"
                                      " WHERE table_name = 'visited_firstlast_weekly'").fetchone()[0]
    _cli_materialize(config, tmp_path / "home-old", monkeypatch)

    _assert_equals_a_fresh_run(config, tmp_path, monkeypatch)
    with duckdb.connect(str(old / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute(f"SELECT max(written_at) FROM {PARTITION_LOG}"
                            " WHERE table_name = 'visited_firstlast_weekly'").fetchone()[0] == weekly_written


# --- a day costs a day ------------------------------------------------------------------------------


def test_a_days_run_reads_only_the_files_of_its_days(tmp_path):
    """A source in Hive-style day directories: a run of one day opens only that day's files (and
    one either side, for timezones), so it succeeds although every other day's file is unreadable."""
    frame = _events().assign(occurred_at=lambda f: f["occurred_at"].dt.tz_localize(None))
    days = sorted(frame["occurred_at"].dt.date.unique())
    for day in days:
        directory = tmp_path / "events" / f"date={day}"
        directory.mkdir(parents=True)
        frame[frame["occurred_at"].dt.date == day].to_parquet(directory / "part-0.parquet", index=False)
    config = write_config(tmp_path, [{"name": "visited", "source": {"parquet": "events/**/*.parquet"},
                                      "start_date": START, "end_date": END}])
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(config, ["fact_visited"], str(START), str(END), instance).success

    target = dt.date(2025, 3, 9)
    for day in days:
        if abs((day - target).days) > 1:
            (tmp_path / "events" / f"date={day}" / "part-0.parquet").write_bytes(b"not parquet at all" * 100)
    late = pd.DataFrame({"user_id": ["late"], "occurred_at": [pd.Timestamp("2025-03-09 12:00")],
                         "country": ["KR"], "device": ["web"]})
    late.to_parquet(tmp_path / "events" / f"date={target}" / "part-1.parquet", index=False)
    result = materialize(config, ["fact_visited"], str(target), instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node("fact_visited")[0].metadata
    assert metadata["files_read"].value == 4  # the day's two files and the days either side
    assert "the run's days only" in metadata["source_read"].value
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        users = {r[0] for r in conn.execute(
            "SELECT user_id FROM fact_visited WHERE period_start = DATE '2025-03-09'").fetchall()}
        expected = set(frame[frame["occurred_at"].dt.date == target]["user_id"]) | {"late"}
        assert users == expected
        assert conn.execute("SELECT count(DISTINCT period_start) FROM fact_visited").fetchone()[0] == len(days)


@pytest.mark.parametrize("staged_days", [1, 6])
def test_a_range_staged_a_few_days_at_a_time_is_the_range_staged_at_once(tmp_path, monkeypatch, staged_days):
    """A backfill's fact days are staged and written a few weeks at a time (memory); the fact, each
    day's counts and the source-wide counts of rows that are never activity are what one stage gives."""
    from activation_assets.engines.duckdb import DuckDBWarehouse

    spec = reference.Spec("Asia/Seoul", dt.date(2025, 3, 1), dt.date(2025, 3, 20), "monday")
    rows = edge_events(spec, seed=3, users=list(range(1, 40)))
    kept = ("preview", "dagster/column_schema")  # the same rows shown either way; not compared as objects

    def fact_of(directory, staged):
        monkeypatch.setattr(DuckDBWarehouse, "staged_days", staged)
        config = small_behavior(directory, spec, rows)
        result = materialize(config, ["fact_visited"], "2025-03-01", "2025-03-20")
        assert result.success, failure_message(result)
        metadata = {e.partition: {k: v.value for k, v in e.materialization.metadata.items() if k not in kept}
                    for e in result.get_asset_materialization_events()}
        return metadata, as_set(table_rows(directory / "warehouse.duckdb", "fact_visited"),
                                ["user_id", "activity_date", "occurred_at", "period_start"])

    stages = []
    stage = DuckDBWarehouse.stage
    monkeypatch.setattr(DuckDBWarehouse, "stage", lambda self, *a: (stages.append(a[0]), stage(self, *a))[1])
    chunked = fact_of(tmp_path / "chunked", staged_days)
    assert len(stages) == -(-20 // staged_days)  # the 20 days were staged that many at a time
    whole = fact_of(tmp_path / "whole", 1000)
    assert len(whole[1]) > 100 and whole[0]["2025-03-20"]["source_before_start_date"] == 2
    assert chunked == whole
