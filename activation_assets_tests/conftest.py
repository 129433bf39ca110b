"""Shared fixtures: edge-case event data, configs in temporary directories, running the graph."""

from __future__ import annotations

import datetime as dt
import os
import random
import warnings
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest
import yaml

from . import reference

warnings.filterwarnings("ignore", message=".*is currently in beta.*")
UTC = dt.timezone.utc


def local_instant(day: dt.date, seconds: int, timezone: str) -> dt.datetime:
    """The UTC instant (aware) of `seconds` after local midnight of `day` in `timezone`."""
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(timezone))
    return (midnight.astimezone(UTC) + dt.timedelta(seconds=seconds))


def edge_events(spec: reference.Spec, seed: int, users: list, days_span: int | None = None) -> list[tuple]:
    """(user, aware UTC datetime | None) rows covering the edges the contract names.

    - users who are active in runs, leave and come back several times, at varied rhythms;
    - times at 00:00:00 and 23:59:59 local (so the UTC date often differs from the local one),
      and on DST-change days for zones that have them;
    - rows just outside [start_date, end_date] (one second before local start, right after end);
    - null user ids, null timestamps, and exact duplicates.
    """
    rng = random.Random(seed)
    first, last = spec.start_date, spec.end_date
    span = (last - first).days + 1
    rows: list[tuple] = []
    for n, user in enumerate(users):
        day = first + dt.timedelta(days=rng.randrange(0, max(1, span // 2)))
        rhythm = rng.choice([0.9, 0.6, 0.3, 0.1])
        while day <= last + dt.timedelta(days=3):
            if rng.random() < rhythm:
                seconds = rng.choice([0, 86399, rng.randrange(0, 86400), 3600 * 2 + 1800])
                rows.append((user, local_instant(day, seconds, spec.timezone)))
                if rng.random() < 0.2:  # a second event on the same local day
                    rows.append((user, local_instant(day, rng.randrange(0, 86400), spec.timezone)))
            # Leave for a while now and then, and come back.
            day += dt.timedelta(days=1 if rng.random() > 0.1 else rng.randrange(2, 40))
    # Just outside the window, on both sides.
    rows.append((users[0], local_instant(first, 0, spec.timezone) - dt.timedelta(seconds=1)))
    rows.append((users[1], local_instant(last + dt.timedelta(days=1), 0, spec.timezone)))
    rows.append((users[2], local_instant(first - dt.timedelta(days=10), 500, spec.timezone)))
    # Nulls and duplicates.
    rows.append((None, local_instant(first + dt.timedelta(days=3), 100, spec.timezone)))
    rows.append((users[3], None))
    rows.extend(rng.sample(rows, 15))
    return rows


def _platform(user, when) -> str | None:
    if when is None:
        return "web"
    return [None, "ios", "ios", "android", "web"][((user or 0) * 7 + when.hour + when.minute) % 5]


def write_parquet_source(path: Path, rows: list[tuple], naive: bool = True) -> None:
    """Integer ids, naive UTC timestamps (as nanoseconds), plus events the `where:` must filter out."""
    frame = pd.DataFrame({
        "uid": pd.array([u for u, _ in rows], dtype="Int64"),
        "ts": pd.to_datetime([None if t is None else (t.replace(tzinfo=None) if naive else t) for _, t in rows],
                             utc=not naive),
        "event_name": "visit",
        # Derived from the row itself, so that duplicated rows are exact duplicates; it changes
        # within a user's rows, and is sometimes missing (a segment column).
        "platform": [_platform(u, t) for u, t in rows],
    })
    noise = frame.head(20)
    noise = noise.assign(event_name="other", uid=pd.array([999_999] * len(noise), dtype="Int64"))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([frame, noise]).to_parquet(path, index=False)


def write_csv_source(path: Path, rows: list[tuple], timezone: str) -> None:
    """String ids, ISO timestamps with the local offset (a different zone than UTC, on purpose)."""
    zone = ZoneInfo(timezone)
    frame = pd.DataFrame({
        "author": [u for u, _ in rows],
        "created": [None if t is None else t.astimezone(zone).isoformat() for _, t in rows],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def write_config(directory: Path, behaviors: list[dict], **top) -> Path:
    path = directory / "activation.yaml"
    document = {"database": "warehouse.duckdb", **top, "behaviors": behaviors}
    path.write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
    return path


def run_graph(config_path: Path, instance=None, **selection) -> int:
    """Materialize everything missing, in order, in-process (what `activation materialize` does)."""
    import dagster as dg

    from activation_assets.pipeline import plan as planning

    from activation_assets.cli import runner
    from activation_assets.config import load_config

    config = load_config(config_path)
    instance = instance or dg.DagsterInstance.ephemeral()
    behaviors = [config.behavior(b) for b in selection.get("behaviors", [b.name for b in config.behaviors])]
    runs = planning.plan(config, behaviors, selection.get("grains"), selection.get("start"), selection.get("end"),
                    done=lambda table: set())
    return runner.execute(config, runs, instance=instance)


def table_rows(database: Path | str, table: str, where: str = "TRUE") -> list[dict]:
    with duckdb.connect(str(database), read_only=True) as conn:
        cursor = conn.execute(f'SELECT * FROM "{table}" WHERE {where}')
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def as_set(rows: list[dict], columns: list[str]) -> set[tuple]:
    return {tuple(row[c] for c in columns) for row in rows}


ACTIVATION_COLUMNS = ["period_start", "user_id", "state", "prev_state", "first_active_period",
                      "last_active_period", "streak", "inactive_streak", "return_gap", "active_periods"]
TRANSITION_COLUMNS = ["period_start", "from_state", "to_state", "users"]


# The longest modules first (about their order in a serial run's --durations): `make test` hands
# whole modules to two workers (pytest-xdist, --dist loadfile), and one that starts last and runs
# for a quarter of an hour would leave the other worker idle until it ends.
LONGEST_MODULES_FIRST = ("test_spark.py", "test_ui.py", "test_trust.py", "test_sources.py", "test_incremental.py",
                         "test_changes.py", "test_reference.py", "test_engagement.py", "test_commands.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module keeps its order


@pytest.fixture(autouse=True)
def _isolated_dagster_home(tmp_path_factory, monkeypatch):
    """No test touches the project's own Dagster instance or config."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path_factory.mktemp("dagster_home")))
    monkeypatch.delenv("ACTIVATION_CONFIG", raising=False)
    yield


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def python_bin() -> str:
    import sys

    return os.path.dirname(sys.executable)


def materialize(config_path: Path, keys: list[str], first: str, last: str | None = None, instance=None):
    """One Dagster run of `keys` over the partition range first..last (a range run, single-run policy)."""
    import dagster as dg

    from activation_assets.config import load_config
    from activation_assets.orchestration.definitions import build_definitions

    defs = build_definitions(load_config(config_path))
    return dg.materialize(
        list(defs.assets), selection=keys, resources=dict(defs.resources),
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first},
    )


def failure_message(result) -> str:
    return " ".join(e.event_specific_data.error.message for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE")


def assert_grains_match_reference(database: Path, rows: list[tuple], spec, name: str = "visited") -> None:
    """Every grain's activation and transitions of `name` equal the brute-force reference's."""
    for grain in ("daily", "weekly", "monthly"):
        expected = reference.activation(rows, spec, grain)
        assert as_set(table_rows(database, f"{name}_activation_{grain}"), ACTIVATION_COLUMNS) == as_set(
            expected, ACTIVATION_COLUMNS), grain
        assert as_set(table_rows(database, f"{name}_transitions_{grain}"), TRANSITION_COLUMNS) == as_set(
            reference.transitions(expected), TRANSITION_COLUMNS), grain


def small_behavior(directory: Path, spec, rows, name: str = "visited", **extra) -> Path:
    """A one-behavior config over a Parquet source of `rows`."""
    write_parquet_source(directory / "events" / "part-1.parquet", rows)
    return write_config(directory, [{
        "name": name, "source": {"parquet": "events/*.parquet", "where": "event_name = 'visit'"},
        "user_column": "uid", "time_column": "ts", "start_date": spec.start_date, "end_date": spec.end_date,
        "timezone": spec.timezone, "week_start": spec.week_start, **extra,
    }])
