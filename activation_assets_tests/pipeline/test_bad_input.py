"""Bad input gets a clear answer that names the behavior, the file or column and what to do;
rows that are not activity are dropped and counted; nothing already written is harmed."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from activation_assets.config import ConfigError, load_config
from activation_assets.orchestration.definitions import build_definitions

from .. import reference
from ..conftest import (
    ACTIVATION_COLUMNS, as_set, edge_events, failure_message, local_instant, materialize, run_graph,
    small_behavior, table_rows, write_config,
)

BIN = Path(sys.executable).parent
SPEC = reference.Spec("Asia/Seoul", dt.date(2025, 3, 3), dt.date(2025, 3, 30), "monday")
GOOD = {"name": "visited", "source": {"table": "events"}, "start_date": "2025-01-01"}
NOT_A_TRACE = ("Traceback", "pydantic", "validation error for", "errors.pydantic.dev", "Input should be",
               "Tuple should have")


def _config(tmp_path, document) -> Path:
    path = tmp_path / "activation.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("document, words", [
    ({"behaviors": [{**GOOD, "sorce": {"table": "x"}}]}, ["behaviors[0] (visited): unknown key 'sorce'"]),
    ({"databse": "x.duckdb", "behaviors": [GOOD]}, ["unknown key 'databse'"]),
    ({"behaviors": [{k: v for k, v in GOOD.items() if k != "name"}]}, ["behaviors[0]: required key 'name' is missing"]),
    ({"behaviors": [GOOD, GOOD]}, ["'visited' is used twice"]),
    ({"behaviors": [{**GOOD, "name": "Visited-App"}]}, ["'Visited-App' is not a lowercase identifier"]),
    ({"behaviors": [{**GOOD, "grains": ["daily", "hourly"]}]},
     ["behaviors[0] (visited) grains[1]: 'hourly' is not a grain; use daily, weekly or monthly"]),
    ({"week_start": "funday", "behaviors": [GOOD]}, ["unknown week_start 'funday'"]),
    ({"behaviors": [{**GOOD, "week_start": "funday"}]}, ["behaviors[0] (visited) week_start: unknown week_start 'funday'"]),
    ({"behaviors": [{**GOOD, "timezone": "Mars/Olympus"}]}, ["behaviors[0] (visited)", "unknown timezone 'Mars/Olympus'"]),
    ({"timezone": "Mars/Olympus", "behaviors": [GOOD]}, ["unknown timezone 'Mars/Olympus'"]),
    ({"behaviors": [{**GOOD, "end_date": "2024-12-31"}]}, ["end_date 2024-12-31 is before start_date 2025-01-01"]),
    ({"behaviors": [{**GOOD, "source": {"table": "a", "csv": "b.csv"}}]}, ["exactly one of"]),
    ({"behaviors": []}, ["behaviors is empty"]),
    ({"behaviors": [{**GOOD, "start_date": "someday"}]},
     ["behaviors[0] (visited) start_date: 'someday' is not a date; write it as YYYY-MM-DD"]),
    ({"behaviors": [{**GOOD, "source": {"table": "x", "where": 3}}]}, ["behaviors[0] (visited) source.where: 3 is not text"]),
    ({"behaviors": [{**GOOD, "owners": "team:growth"}]}, ["behaviors[0] (visited) owners: 'team:growth' is not a list"]),
    ({"warehouse": {"duckdb": {"databas": "x"}}, "behaviors": [GOOD]}, ["warehouse.duckdb: unknown key 'databas'"]),
    ({"behaviors": [{**GOOD, "engagement": {"week_days": 7, "month_days": 7}}]},
     ["behaviors[0] (visited) engagement:", "week_days 7 and month_days 7 are not valid",
      "1 <= week_days < month_days <= 62"]),
    ({"engagement": {"week_days": 7, "month_days": 90}, "behaviors": [GOOD]},
     ["engagement: engagement windows week_days 7 and month_days 90 are not valid"]),
    ({"behaviors": [{**GOOD, "engagement": {"week_days": "seven"}}]},
     ["behaviors[0] (visited) engagement.week_days: 'seven' is not valid"]),
    ({"behaviors": [{**GOOD, "engagement": {"weeks": 2}}]}, ["behaviors[0] (visited) engagement: unknown key 'weeks'"]),
    ({"behaviors": [{**GOOD, "segments": [{"column": "Country"}]}]},
     ["behaviors[0] (visited) segments[0]", "segment column 'Country' is not a lowercase identifier", "`name:`"]),
    ({"behaviors": [{**GOOD, "segments": [{"column": "a", "name": "x"}, {"column": "b", "name": "x"}]}]},
     ["segment name 'x' is used twice"]),
    ({"behaviors": [{**GOOD, "segments": [{"column": "plan", "max_values": 0}]}]},
     ["behaviors[0] (visited) segments[0].max_values"]),
    ({"behaviors": [{**GOOD, "segments": [{"column": "plan", "values": ["free", "other"]}]}]},
     ["segment 'plan': `values:` lists 'other'"]),
    ({"behaviors": [{**GOOD, "growth_model": {"scenarios": {"x": {"nur": 0.1}}}}]},
     ["behaviors[0] (visited) growth_model", "scenario 'x': 'nur' is no rate; use one of nurr, curr"]),
    ({"behaviors": [{**GOOD, "growth_model": {"scenarios": {"x": {"curr": 5}}}}]},
     ["scenario 'x': curr 5", "use a number in [-1, 1]"]),
    ({"behaviors": [{**GOOD, "growth_model": {"scenarios": {"x": {"new_users": -1}}}}]},
     ["scenario 'x': new_users is a factor on the inflow and cannot be negative"]),
    ({"behaviors": [{**GOOD, "growth_model": {"scenarios": {"baseline": {"curr": 0.1}}}}]},
     ["scenario 'baseline'", "other than 'baseline'"]),
    ({"behaviors": [{**GOOD, "grains": ["weekly"], "growth_model": {}}]},
     ["behaviors[0] (visited)", "growth_model needs the daily grain"]),
    ({"behaviors": [{**GOOD, "end_date": "2025-01-20", "growth_model": {}}]},
     ["growth_model window_days 28 needs a day with 28 days of engagement behind it", "shorten window_days"]),
    ({"behaviors": [{**GOOD, "growth_model": {"window_days": 0}}]},
     ["behaviors[0] (visited) growth_model.window_days"]),
])
def test_config_errors_are_readable(tmp_path, document, words):
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, document))
    message = str(error.value)
    assert str(tmp_path / "activation.yaml") in message
    for word in words:
        assert word in message
    assert not any(noise in message for noise in NOT_A_TRACE)
    assert len(message.splitlines()) <= 2, "one problem, one line: no follow-on noise"


def test_an_impossible_date_in_yaml_is_named(tmp_path):
    """YAML's own date parser used to raise 'month must be in 1..12' with a trace."""
    path = tmp_path / "activation.yaml"
    path.write_text("behaviors:\n  - name: visited\n    source: {table: events}\n    start_date: 2025-13-01\n")
    with pytest.raises(ConfigError, match=r"behaviors\[0\] \(visited\) start_date: '2025-13-01' is not a date"):
        load_config(path)


def test_a_source_that_matches_no_file(tmp_path):
    path = _config(tmp_path, {"behaviors": [{**GOOD, "source": {"parquet": "raw/*.parquet"}}]})
    with pytest.raises(ConfigError, match=r"behavior 'visited': source parquet '.*raw/\*\.parquet' matches no file"):
        build_definitions(load_config(path))


def test_the_code_location_and_validate_say_the_same(tmp_path):
    path = _config(tmp_path, {"behaviors": [{**GOOD, "timezone": "Mars/Olympus"}]})
    env = {**os.environ, "ACTIVATION_CONFIG": str(path), "DAGSTER_HOME": str(tmp_path)}
    location = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-m", "activation_assets.definitions"],
                              env=env, capture_output=True, text=True, timeout=300)
    assert location.returncode != 0
    assert "unknown timezone 'Mars/Olympus'" in location.stdout + location.stderr
    validate = subprocess.run([str(BIN / "activation"), "validate", "--config", str(path)],
                              env=env, capture_output=True, text=True, timeout=300)
    assert validate.returncode == 1
    assert "unknown timezone 'Mars/Olympus'" in validate.stderr and "Traceback" not in validate.stderr


def test_validate_checks_tables_and_columns(tmp_path):
    path = _config(tmp_path, {"database": "w.duckdb", "behaviors": [{**GOOD, "source": {"table": "events"}}]})
    result = subprocess.run([str(BIN / "activation"), "validate", "--config", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "behavior 'visited': cannot read its source (table events)" in result.stderr
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("CREATE TABLE events AS SELECT 1 AS user_id, TIMESTAMP '2025-01-01 10:00' AS occurred_at")
    result = subprocess.run([str(BIN / "activation"), "validate", "--config", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_a_segment_named_like_an_output_column_is_refused(tmp_path):
    path = _config(tmp_path, {"database": "w.duckdb", "behaviors": [
        {**GOOD, "segments": [{"column": "tier", "name": "streak"}]}]})
    result = subprocess.run([str(BIN / "activation"), "validate", "--config", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert ("behavior 'visited': segment 'streak' would add column 'streak' to visited_activation_<grain>, which"
            " has one of that name already. Give the segment another `name:`") in result.stderr
    assert not any(word in result.stderr for word in NOT_A_TRACE)
    with pytest.raises(ConfigError, match="segment 'streak' would add column 'streak'"):
        build_definitions(load_config(path))


# --- source data ---------------------------------------------------------------------------------


def _source(tmp_path, frame: pd.DataFrame, name="part-1.parquet", **behavior) -> Path:
    (tmp_path / "events").mkdir(exist_ok=True)
    frame.to_parquet(tmp_path / "events" / name, index=False)
    return write_config(tmp_path, [{
        "name": "visited", "source": {"parquet": "events/*.parquet"}, "start_date": SPEC.start_date,
        "end_date": SPEC.end_date, "timezone": SPEC.timezone, **behavior}])


def _events(n=50, ids=None, times=None) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ids if ids is not None else [i % 7 + 1 for i in range(n)],
        "occurred_at": times if times is not None else pd.date_range("2025-03-03", periods=n, freq="11h"),
    })


@pytest.mark.parametrize("frame, behavior, words", [
    (_events(), {"time_column": "ts"}, ["behavior 'visited'", "no column 'ts'", "time_column", "user_id, occurred_at"]),
    (_events(times=list(range(50))), {}, ["'occurred_at'", "is BIGINT, not a timestamp", "time_column"]),
    (_events(times=["2025-03-05 10:00"] * 48 + ["yesterday", "31/02/2025"]), {},
     ["2 value(s) of time column 'occurred_at'", "'yesterday'", "do not parse"]),
    (_events(), {"source": {"parquet": "events/*.parquet", "where": "user_id < 0"}}, ["has no rows at all", "where"]),
    (_events().rename(columns={"user_id": "activity_date"}), {"user_column": "activity_date"}, None),
])
def test_bad_source_data_fails_the_fact_clearly(tmp_path, frame, behavior, words):
    config = _source(tmp_path, frame, **behavior)
    result = materialize(config, ["fact_visited", "visited_firstlast_daily"], "2025-03-03", "2025-03-09")
    if words is None:  # a source column may be picked as user column even if named like a derived one
        assert result.success
        return
    assert not result.success
    message = failure_message(result)
    for word in words:
        assert word in message, message
    assert "visited_firstlast_daily" not in {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _segmented_events() -> pd.DataFrame:
    return _events().assign(platform=[["ios", "android", "web"][i % 3] for i in range(50)])


def test_a_segment_column_missing_from_the_source_is_named_and_nothing_is_written(tmp_path):
    config = _source(tmp_path, _segmented_events(), segments=[{"column": "plaform"}])
    result = subprocess.run([str(BIN / "activation"), "validate", "--config", str(config)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert ("behavior 'visited': segment 'plaform' reads column 'plaform', which the source (parquet"
            in result.stderr)
    assert "(its other columns: platform). Fix the segment's `column:`" in result.stderr
    result = subprocess.run([str(BIN / "activation"), "materialize", "--config", str(config)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "segment 'plaform' reads column 'plaform'" in result.stderr
    assert not any(word in result.stderr for word in NOT_A_TRACE)
    assert not (tmp_path / "warehouse.duckdb").exists()


def test_validate_reports_the_values_of_each_segment(tmp_path):
    config = _source(tmp_path, _segmented_events(), segments=[{"column": "platform", "values": ["ios"]}])
    result = subprocess.run([str(BIN / "activation"), "validate", "--config", str(config)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # 50 rows: 17 ios (i % 3 == 0), 17 android, 16 web
    assert ("behavior 'visited': segment 'platform' (column 'platform'): 3 distinct value(s) in the source:"
            " android 34%, ios 34%, web 32%; values: keeps 1, 2 become 'other'") in result.stdout


def _segment_rows(database) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        rows = conn.execute("SELECT * FROM visited_segment_transitions_daily ORDER BY ALL").fetchall() \
            if "visited_segment_transitions_daily" in tables else []
        logged = conn.execute("SELECT period_start FROM _activation_partitions WHERE table_name ="
                              " 'visited_segment_transitions_daily' ORDER BY 1").fetchall()
    return rows + logged


def test_a_segment_table_without_the_table_it_adds_up_to_is_refused_by_name(tmp_path):
    config = _source(tmp_path, _segmented_events(), segments=[{"column": "platform"}])
    result = materialize(config, ["fact_visited", "visited_firstlast_daily", "visited_activation_daily",
                                  "visited_segment_transitions_daily"], "2025-03-03", "2025-03-09")
    assert not result.success
    assert ("cannot materialize visited_segment_transitions_daily for 2025-03-03..2025-03-09: its values add up to"
            " visited_transitions_daily, and its checks compare the two: partition 2025-03-03 of"
            " visited_transitions_daily has not been materialized (and 6 more up to 2025-03-09). Materialize"
            " visited_transitions_daily for those periods first.") in failure_message(result)


def test_more_values_than_max_values_fails_the_run_and_writes_none_of_its_rows(tmp_path):
    """A range whose later days hold a third value: the run fails naming the segment, the first such
    partition and the remedy, and writes no segment row, not even of the days before it; a run over
    partitions written before (with a higher max_values) leaves them as they were."""
    keys = ["fact_visited", "visited_firstlast_daily", "visited_activation_daily", "visited_transitions_daily",
            "visited_segment_transitions_daily"]
    config = _source(tmp_path, _segmented_events(), segments=[{"column": "platform", "max_values": 2}])
    result = materialize(config, keys, "2025-03-03", "2025-03-09")
    assert not result.success
    message = failure_message(result)
    assert ("behavior 'visited': segment 'platform' (column 'platform') has 3 distinct values in the daily"
            " partition 2025-03-0") in message
    assert "more than its max_values 2. List the values to keep with `values:`" in message
    assert "raise `max_values:`; nothing of this run was written" in message
    assert _segment_rows(tmp_path / "warehouse.duckdb") == []

    config.write_text(config.read_text().replace("max_values: 2", "max_values: 3"))
    assert materialize(config, keys, "2025-03-03", "2025-03-09").success
    written = _segment_rows(tmp_path / "warehouse.duckdb")
    assert len(written) > 7
    config.write_text(config.read_text().replace("max_values: 3", "max_values: 2"))
    assert not materialize(config, keys, "2025-03-03", "2025-03-09").success
    assert _segment_rows(tmp_path / "warehouse.duckdb") == written


def test_files_that_disagree_on_a_type_are_refused(tmp_path):
    _source(tmp_path, _events(), name="a.parquet")
    config = _source(tmp_path, _events(ids=[f"u{i}" for i in range(50)]), name="b.parquet")
    result = materialize(config, ["fact_visited"], "2025-03-03")
    assert "the files of parquet" in failure_message(result)
    assert "disagree on the type of column 'user_id' (BIGINT in 1 file(s), e.g. a.parquet; VARCHAR" in failure_message(result)


def test_a_type_change_between_partitions_leaves_earlier_ones_untouched(tmp_path):
    config = _source(tmp_path, _events())
    assert materialize(config, ["fact_visited"], "2025-03-03", "2025-03-09").success
    before = table_rows(tmp_path / "warehouse.duckdb", "fact_visited")
    _source(tmp_path, _events(ids=[f"u{i}" for i in range(50)]))  # same file, now string ids
    result = materialize(config, ["fact_visited"], "2025-03-05", "2025-03-12")
    message = failure_message(result)
    assert "the source's columns changed since earlier partitions of fact_visited" in message
    assert "user_id: BIGINT before, VARCHAR now" in message
    assert table_rows(tmp_path / "warehouse.duckdb", "fact_visited") == before


def test_rows_that_are_not_activity_are_dropped_and_counted(tmp_path):
    start = local_instant(SPEC.start_date, 0, SPEC.timezone)
    rows = [(1, start), (1, start), (1, start),                 # two exact duplicates
            (None, start + dt.timedelta(hours=5)),                # null user
            (2, None), (3, None),                                  # null times
            (4, start - dt.timedelta(seconds=1)),                  # 2025-03-02 local: before start
            (5, local_instant(SPEC.end_date + dt.timedelta(days=1), 0, SPEC.timezone)),  # after end
            (6, start + dt.timedelta(days=1))]
    config = small_behavior(tmp_path, SPEC, rows)
    result = materialize(config, ["fact_visited"], "2025-03-03", "2025-03-04")
    assert result.success
    events = {e.partition: e.materialization.metadata for e in result.get_asset_materialization_events()}
    first, second = events["2025-03-03"], events["2025-03-04"]
    assert first["dagster/row_count"].value == 1
    assert first["dropped_duplicates"].value == 2 and first["dropped_null_user_id"].value == 1
    assert second["dagster/row_count"].value == 1 and second["dropped_duplicates"].value == 0
    # A run of some days reads only what can fall on them: no source-wide counts, and it says so, on
    # the run's last partition (what describes the run is not repeated on each partition's event).
    assert "source_null_occurred_at" not in second and "the run's days only" in second["source_read"].value
    assert "source_read" not in first and "preview" not in first
    # A run of every day reads the whole source once, and counts what can never be activity.
    whole = materialize(config, ["fact_visited"], "2025-03-03", "2025-03-30")
    metadata = {e.partition: e.materialization.metadata
                for e in whole.get_asset_materialization_events()}["2025-03-30"]
    assert metadata["source_read"].value == "whole source"
    assert metadata["source_null_occurred_at"].value == 2 and metadata["source_unparseable_occurred_at"].value == 0
    assert metadata["source_before_start_date"].value == 1 and metadata["source_after_end_date"].value == 1
    assert len(table_rows(tmp_path / "warehouse.duckdb", "fact_visited")) == reference.fact_rows(
        [r for r in rows if r[1] is None or reference.local_date(r[1], SPEC.timezone) <= dt.date(2025, 3, 4)], SPEC)


KILLER = """
import os, signal, sys
from activation_assets.pipeline import steps
from activation_assets.engines import duckdb as warehouse
from activation_assets.config import load_config, Grain
from activation_assets.periods import existing_periods
config = load_config(sys.argv[1])
behavior = config.behaviors[0]
real = warehouse.DuckDBWarehouse.record_partitions
def record_then_die(self, table, rows):
    real(self, table, rows)
    if max(rows).isoformat() == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)  # inside the transaction, after the insert
warehouse.DuckDBWarehouse.record_partitions = record_then_die
with warehouse.connect_database(config.database) as conn:
    steps.materialize_firstlast(conn, behavior, Grain.daily, existing_periods(behavior, Grain.daily))
"""


def test_a_run_killed_mid_write_leaves_the_previous_contents(tmp_path):
    rows = edge_events(SPEC, seed=41, users=list(range(1, 20)))
    config = small_behavior(tmp_path, SPEC, rows)
    run_graph(config)
    db = tmp_path / "warehouse.duckdb"
    before = table_rows(db, "visited_firstlast_daily")
    # New data arrives for the whole range, and the rewrite of FirstLast is killed at 03-20.
    more = rows + [(99, local_instant(dt.date(2025, 3, 4), 100, SPEC.timezone))]
    small_behavior(tmp_path, SPEC, more)
    materialize(config, ["fact_visited"], "2025-03-03", "2025-03-30")
    killed = subprocess.run([sys.executable, "-c", KILLER, str(config), "2025-03-20"], capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    after = table_rows(db, "visited_firstlast_daily")
    by_period = lambda rs: Counter(r["period_start"] for r in rs)  # noqa: E731
    # Every partition is whole: the killed one kept its previous rows, the earlier ones are new.
    assert by_period(after)[dt.date(2025, 3, 20)] == by_period(before)[dt.date(2025, 3, 20)]
    assert 99 in {r["user_id"] for r in after if r["period_start"] == dt.date(2025, 3, 19)}
    assert 99 not in {r["user_id"] for r in after if r["period_start"] == dt.date(2025, 3, 20)}
    run_graph(config)  # and running again gives the right rows
    assert as_set(table_rows(db, "visited_activation_daily"), ACTIVATION_COLUMNS) == as_set(
        reference.activation(more, SPEC, "daily"), ACTIVATION_COLUMNS)
