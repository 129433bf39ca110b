"""Incremental, idempotent, never silently wrong: how partitions build on each other."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
import pandas as pd

from activation_assets.pipeline import plan as planning

from activation_assets.cli import runner
from activation_assets.config import load_config

from .. import reference
from ..conftest import (
    ACTIVATION_COLUMNS, as_set, edge_events, failure_message, local_instant, materialize, run_graph,
    small_behavior, table_rows, write_parquet_source,
)

SPEC = reference.Spec("Asia/Seoul", dt.date(2025, 3, 5), dt.date(2025, 4, 20), "monday")
USERS = list(range(1, 26))


def _all_tables(db) -> dict[str, list[tuple]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name NOT LIKE '\\_%' ESCAPE '\\'"
        ).fetchall()]
        return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"').fetchall())) for t in tables}


def _matches_reference(db, rows, spec, behavior="visited") -> bool:
    return all(
        as_set(table_rows(db, f"{behavior}_activation_{g}"), ACTIVATION_COLUMNS)
        == as_set(reference.activation(rows, spec, g), ACTIVATION_COLUMNS)
        for g in ("daily", "weekly", "monthly")
    )


def test_partition_by_partition_equals_reference(tmp_path):
    rows = edge_events(SPEC, seed=3, users=USERS)
    config = small_behavior(tmp_path, SPEC, rows)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(config, ["fact_visited"], "2025-03-05", "2025-04-20", instance).success
    days = pd.date_range("2025-03-05", "2025-04-20").strftime("%Y-%m-%d")
    for day in days:  # one run per partition, as a multi-run backfill would make them
        assert materialize(config, ["visited_firstlast_daily", "visited_activation_daily",
                                    "visited_transitions_daily"], day, instance=instance).success
    for week in pd.date_range("2025-03-03", "2025-04-14", freq="7D").strftime("%Y-%m-%d"):
        assert materialize(config, ["visited_firstlast_weekly", "visited_activation_weekly",
                                    "visited_transitions_weekly"], week, instance=instance).success
    assert materialize(config, ["visited_firstlast_monthly", "visited_activation_monthly",
                                "visited_transitions_monthly"], "2025-03-01", "2025-03-01", instance).success
    # (April is incomplete: 2025-04-20 is not its last day, so monthly ends with March.)
    assert _matches_reference(tmp_path / "warehouse.duckdb", rows, SPEC)


def test_materializing_again_is_bit_for_bit(tmp_path):
    rows = edge_events(SPEC, seed=4, users=USERS)
    config = small_behavior(tmp_path, SPEC, rows)
    run_graph(config)
    before = _all_tables(tmp_path / "warehouse.duckdb")
    run_graph(config)  # everything again, over the same data
    assert materialize(config, ["visited_firstlast_weekly", "visited_activation_weekly",
                                "visited_transitions_weekly"], "2025-03-24").success  # one partition again
    after = _all_tables(tmp_path / "warehouse.duckdb")
    # The fact, six models per grain, and the daily grain's three rolling engagement tables.
    assert set(before) == set(after) and len(before) == 1 + 6 * 3 + 3
    for table in before:
        assert before[table] == after[table], table


def test_a_missing_predecessor_is_named_and_nothing_is_built_on_it(tmp_path):
    rows = edge_events(SPEC, seed=5, users=USERS)
    config = small_behavior(tmp_path, SPEC, rows)
    assert materialize(config, ["fact_visited"], "2025-03-05", "2025-04-20").success
    daily = ["visited_firstlast_daily"]
    # Nothing materialized yet: the first partition is the one to name.
    result = materialize(config, daily, "2025-03-10")
    assert not result.success
    assert "partition 2025-03-05 of visited_firstlast_daily has not been materialized" in failure_message(result)
    # A gap: 03-05..03-07 exist, 03-08 does not; a range starting after it names 03-08.
    assert materialize(config, daily, "2025-03-05", "2025-03-07").success
    result = materialize(config, daily, "2025-03-09", "2025-03-12")
    assert "partition 2025-03-08 of visited_firstlast_daily" in failure_message(result)
    assert {r["period_start"] for r in table_rows(tmp_path / "warehouse.duckdb", "visited_firstlast_daily")} == {
        dt.date(2025, 3, 5), dt.date(2025, 3, 6), dt.date(2025, 3, 7)}
    # Activation needs its own predecessor too, and FirstLast of its period.
    result = materialize(config, ["visited_activation_daily"], "2025-03-06")
    assert "partition 2025-03-05 of visited_activation_daily" in failure_message(result)
    result = materialize(config, ["visited_activation_daily"], "2025-03-05", "2025-03-08")
    assert "partition 2025-03-08 of visited_firstlast_daily" in failure_message(result)


def test_firstlast_needs_every_fact_day_of_its_period(tmp_path):
    rows = edge_events(SPEC, seed=5, users=USERS)
    config = small_behavior(tmp_path, SPEC, rows)
    assert materialize(config, ["fact_visited"], "2025-03-05", "2025-03-12").success
    result = materialize(config, ["visited_firstlast_weekly"], "2025-03-03", "2025-03-10")
    assert "partition 2025-03-13 of fact_visited has not been materialized" in failure_message(result)


def test_no_step_reads_the_fact_history(tmp_path):
    """Delete every fact row before a period: its partitions must still come out right."""
    rows = edge_events(SPEC, seed=6, users=USERS)
    config = small_behavior(tmp_path, SPEC, rows)
    behavior = load_config(config).behaviors[0]
    db = tmp_path / "warehouse.duckdb"
    run_graph(config, end=dt.date(2025, 3, 31))
    with duckdb.connect(str(db)) as conn:
        conn.execute("DELETE FROM fact_visited WHERE period_start < DATE '2025-03-31'")
        assert conn.execute("SELECT count(*) FROM fact_visited").fetchone()[0] > 0
    runs = planning.plan(load_config(config), [behavior], None, dt.date(2025, 4, 1), None, done=lambda t: set())
    assert {r.periods[0] for r in runs} == {dt.date(2025, 4, 1), dt.date(2025, 3, 31)}  # daily, weekly
    runner.execute(load_config(config), runs, instance=dg.DagsterInstance.ephemeral())
    for grain in ("daily", "weekly"):
        expected = [r for r in reference.activation(rows, SPEC, grain) if r["period_start"] >= dt.date(2025, 3, 31)]
        actual = table_rows(db, f"visited_activation_{grain}", "period_start >= DATE '2025-03-31'")
        assert as_set(actual, ACTIVATION_COLUMNS) == as_set(expected, ACTIVATION_COLUMNS)


def test_late_data_then_rerun_equals_a_fresh_run(tmp_path, monkeypatch):
    rows = edge_events(SPEC, seed=8, users=USERS)
    config = small_behavior(tmp_path, SPEC, rows)
    instance = dg.DagsterInstance.get()
    loaded = load_config(config)
    runner.execute(loaded, planning.plan(loaded, list(loaded.behaviors), None, None, None, lambda t: set()), instance)
    # Late rows for 2025-03-20 (local) arrive in a new file: two returning users and a brand-new one.
    late = [(3, local_instant(dt.date(2025, 3, 20), 60, SPEC.timezone)),
            (4, local_instant(dt.date(2025, 3, 20), 86399, SPEC.timezone)),
            (777, local_instant(dt.date(2025, 3, 20), 43200, SPEC.timezone))]
    write_parquet_source(tmp_path / "events" / "part-2-late.parquet", late)
    # The CLI's window: the fact day, and every materialized partition after it, in order.
    done = runner.materialized_partitions(instance, loaded)
    runs = planning.plan(loaded, list(loaded.behaviors), None, dt.date(2025, 3, 20), dt.date(2025, 3, 20), done)
    assert [(r.label, r.periods[0], r.periods[-1]) for r in runs] == [
        ("fact_visited", dt.date(2025, 3, 20), dt.date(2025, 3, 20)),
        ("visited daily", dt.date(2025, 3, 20), dt.date(2025, 4, 20)),
        ("visited weekly", dt.date(2025, 3, 17), dt.date(2025, 4, 14)),
        ("visited monthly", dt.date(2025, 3, 1), dt.date(2025, 3, 1)),
    ]
    assert runner.execute(loaded, runs, instance) == 0
    assert _matches_reference(tmp_path / "warehouse.duckdb", rows + late, SPEC)


def test_extending_end_date_computes_only_the_new_partitions(tmp_path):
    rows = edge_events(SPEC, seed=9, users=USERS)
    short = reference.Spec(SPEC.timezone, SPEC.start_date, dt.date(2025, 3, 31), SPEC.week_start)
    config = small_behavior(tmp_path, short, rows)
    instance = dg.DagsterInstance.get()
    loaded = load_config(config)
    runner.execute(loaded, planning.plan(loaded, list(loaded.behaviors), None, None, None, lambda t: set()), instance)
    assert _matches_reference(tmp_path / "warehouse.duckdb", rows, short)
    nothing = planning.plan(loaded, list(loaded.behaviors), None, None, None, runner.materialized_partitions(instance, loaded))
    assert nothing == []

    config.write_text(config.read_text().replace("2025-03-31", "2025-04-20"))
    loaded = load_config(config)
    runs = planning.plan(loaded, list(loaded.behaviors), None, None, None, runner.materialized_partitions(instance, loaded))
    assert [(r.label, r.periods[0], r.periods[-1]) for r in runs] == [
        ("fact_visited", dt.date(2025, 4, 1), dt.date(2025, 4, 20)),
        ("visited daily", dt.date(2025, 4, 1), dt.date(2025, 4, 20)),
        ("visited weekly", dt.date(2025, 3, 31), dt.date(2025, 4, 14)),
        # monthly: April ends after 04-20, so there is no new complete month
    ]
    runner.execute(loaded, runs, instance)
    assert _matches_reference(tmp_path / "warehouse.duckdb", rows, SPEC)
