"""Period arithmetic and config loading, on hand-worked examples."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from activation_assets.config import ConfigError, Grain, load_config, parse_config
from activation_assets.periods import Periods, end_exclusive, existing_periods, first_period

D = dt.date


@pytest.mark.parametrize("grain, week_start, day, start", [
    (Grain.daily, 0, D(2024, 2, 29), D(2024, 2, 29)),
    (Grain.weekly, 0, D(2024, 1, 7), D(2024, 1, 1)),    # Sunday -> the Monday before
    (Grain.weekly, 0, D(2024, 1, 8), D(2024, 1, 8)),    # a Monday is its own week start
    (Grain.weekly, 6, D(2024, 1, 7), D(2024, 1, 7)),    # Sunday weeks
    (Grain.weekly, 6, D(2024, 1, 6), D(2023, 12, 31)),  # across a year end
    (Grain.monthly, 0, D(2024, 2, 29), D(2024, 2, 1)),
])
def test_start_of(grain, week_start, day, start):
    assert Periods(grain, week_start).start_of(day) == start


def test_shift_and_last_day():
    monthly = Periods(Grain.monthly)
    assert monthly.shift(D(2024, 11, 1), 3) == D(2025, 2, 1)
    assert monthly.previous(D(2024, 1, 1)) == D(2023, 12, 1)
    assert monthly.last_day(D(2024, 2, 1)) == D(2024, 2, 29)
    weekly = Periods(Grain.weekly)
    assert weekly.previous(D(2024, 1, 8)) == D(2024, 1, 1)
    assert weekly.last_day(D(2024, 1, 1)) == D(2024, 1, 7)


def _behavior(**kw):
    document = {"behaviors": [{"name": "b", "source": {"table": "t"}, "start_date": "2025-01-15", **kw}]}
    return parse_config(document, Path("/tmp/x.yaml")).behaviors[0]


def test_first_period_and_end_bound():
    b = _behavior(end_date="2025-03-30")  # a Sunday: the week of 03-24 is complete
    assert first_period(b, Grain.weekly) == D(2025, 1, 13)
    assert first_period(b, Grain.monthly) == D(2025, 1, 1)
    assert end_exclusive(b, Grain.weekly) == D(2025, 3, 31)
    assert end_exclusive(b, Grain.monthly) == D(2025, 3, 1)  # March is not complete on the 30th
    assert existing_periods(b, Grain.monthly)[-1] == D(2025, 2, 1)
    assert existing_periods(b, Grain.weekly)[-1] == D(2025, 3, 24)
    b = _behavior(end_date="2025-03-31")
    assert existing_periods(b, Grain.monthly)[-1] == D(2025, 3, 1)
    open_ended = _behavior()
    assert existing_periods(open_ended, Grain.daily, today=D(2025, 2, 1))[-1] == D(2025, 1, 31)
    assert existing_periods(open_ended, Grain.monthly, today=D(2025, 2, 1)) == [D(2025, 1, 1)]
    assert existing_periods(open_ended, Grain.monthly, today=D(2025, 1, 31)) == []


def test_defaults_flow_from_the_top_and_paths_resolve(tmp_path):
    path = tmp_path / "conf" / "activation.yaml"
    path.parent.mkdir()
    path.write_text(
        "database: db/w.duckdb\ntimezone: Asia/Seoul\nweek_start: Sunday\nbehaviors:\n"
        "  - {name: a, source: {parquet: 'raw/*.parquet'}, start_date: 2025-01-01}\n"
        "  - {name: b, source: {csv: /abs/x.csv, where: 'k = 1'}, start_date: 2025-01-01, timezone: UTC,"
        " grains: [monthly, daily]}\n")
    config = load_config(path)
    a, b = config.behaviors
    assert config.database == str(tmp_path / "conf" / "db" / "w.duckdb")
    assert a.source.location == str(tmp_path / "conf" / "raw" / "*.parquet")
    assert (a.timezone, a.week_start, a.user_column, a.time_column) == ("Asia/Seoul", "sunday", "user_id", "occurred_at")
    assert a.grains == (Grain.daily, Grain.weekly, Grain.monthly)
    assert (b.timezone, b.source.location, b.grains) == ("UTC", "/abs/x.csv", (Grain.daily, Grain.monthly))


def test_config_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "other.yaml"
    path.write_text("behaviors:\n  - {name: x, source: {table: t}, start_date: 2025-01-01}\n")
    monkeypatch.setenv("ACTIVATION_CONFIG", str(path))
    assert load_config().behaviors[0].name == "x"


def test_bundled_config_loads():
    config = load_config(Path(__file__).resolve().parent.parent / "activation.yaml")
    assert [b.name for b in config.behaviors] == ["visited_app", "listed_item", "wrote_post"]
    with pytest.raises(ConfigError, match="no behavior named 'nope'"):
        config.behavior("nope")
