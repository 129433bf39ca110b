"""Ways the layer could be silently wrong, each pinned by a test that failed before its fix."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
import pandas as pd
import pytest

from .conftest import materialize, write_config

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
