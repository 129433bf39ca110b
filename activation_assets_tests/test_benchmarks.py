"""A tiny run of the benchmark harness: it runs end to end, and its baselines agree with the layer."""

from __future__ import annotations

import pytest

from benchmarks import harness
from benchmarks.harness import run


@pytest.mark.slow
def test_benchmark_smoke(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "ONE_PASS_SCALE", (900, 21))
    report = tmp_path / "benchmarks.md"
    results = run(users=1500, days=35, reps=1, workdir=tmp_path / "work", report=report)
    assert results.facts["failed_checks"] == 0
    # The naive full-history recompute writes exactly the incremental step's rows, and the classic
    # growth accounting (one day, its predecessor and the first days of its users) gets the same counts.
    naive = {k: v for k, v in results.facts.items() if k.startswith("naive_differs")}
    assert naive and all(v == 0 for v in naive.values())
    assert results.facts["classic_matches"] is True
    # The one-pass SQL reference builds exactly the daily backfill's tables.
    one_pass = {k: v for k, v in results.facts.items() if k.startswith("one_pass_differs")}
    assert one_pass and all(v == 0 for v in one_pass.values())
    text = report.read_text()
    assert "| measure | value | note |" in text and "backfill: all grains, wall time" in text
    assert "floor" in text and "naive recompute" in text and "classic growth accounting" in text
    assert "what the bits and the 3 engagement assets add" in text


@pytest.mark.slow
@pytest.mark.postgres
def test_bookkeeping_benchmark_smoke(tmp_path):
    """The four variants run (SQLite and Postgres, batched or not) and the report has each."""
    from benchmarks import bookkeeping

    results = bookkeeping.run(days=3, reps=1)
    report = tmp_path / "bookkeeping.md"
    bookkeeping.write_report(report, results, days=3, reps=1)
    measures = [m for m, _, _ in results.rows]
    assert measures == ["SQLite, unbatched", "SQLite, DAGSTER_EVENT_BATCH_SIZE=100", "SQLite: batched / unbatched",
                        "Postgres, unbatched", "Postgres, DAGSTER_EVENT_BATCH_SIZE=100", "Postgres: batched / unbatched"]
    assert "36 asset partitions" in report.read_text()


@pytest.mark.slow
def test_dbt_layer_benchmark_smoke(tmp_path):
    """The comparison with the same layer written in dbt runs end to end (the child that times
    `activation materialize` included), and the two layers' rows agree after the backfill and the day."""
    from benchmarks import dbt_layer

    report = tmp_path / "dbt.md"
    rows = dbt_layer.run(users=1500, days=14, reps=1, day_reps=1, workdir=tmp_path / "work", report=report)
    measured = {measure: value for measure, value, _ in rows}
    assert measured["rows of dbt's relations that differ from this project's"] == "0"
    assert measured["rows that differ after the day"] == "0"
    text = report.read_text()
    assert "of which Dagster's bookkeeping" in text and "peak RSS, dbt run" in text


def test_daysplit_benchmark_smoke(tmp_path):
    """A day's steps and checks in turns runs end to end: every check of every daily table passes on
    the day it rebuilds (the benchmark asserts it), and the report names each table's checks."""
    from benchmarks import daysplit

    report = tmp_path / "daysplit.md"
    results = daysplit.run(users=1500, days=20, rounds=2, workdir=tmp_path / "work", report=report)
    measured = {measure: note for measure, _, note in results.rows}
    assert "x the steps" in measured["day 20: every check"]
    assert "windows_match_fact" in measured["day 20: checks of split_engagement_daily"]
    assert "every check" in report.read_text()
