"""The growth model's three relations against an independent computation of the contract (plain
Python from the stored engagement tables, `reference.growth_forecasts`), on simulated usage with a
stable regime and one whose next-day retention drops mid-way, which the accuracy must show."""

from __future__ import annotations

import datetime as dt
import random

import dagster as dg
import pytest

from .. import reference
from ..conftest import run_graph, table_rows, write_config, write_parquet_source

START, END = dt.date(2025, 1, 1), dt.date(2025, 4, 30)
CHANGE = dt.date(2025, 3, 15)  # the shifted behavior's retention of yesterday's active users drops here
WINDOW, HORIZON = 14, 35
SCENARIOS = {
    "onboarding": {"nurr": 0.1},                    # +10 points on new users' next-day retention
    "everyone_back": {"curr": 0.9},                 # more than at_risk_wau holds: all of it moves
    "worse_and_fewer": {"curr": -0.2, "rurr": -1.0, "new_users": 0.5},  # negative, one beyond what can move
}


def simulate(seed: int, retention_after_change: float) -> list[tuple]:
    """(user, UTC instant) rows: 25-35 new users a day; a user active yesterday comes back with
    probability 0.6 (from CHANGE on, `retention_after_change`), one away 2-7 days 0.2, 8-28 days
    0.06, longer 0.01."""
    rng = random.Random(seed)
    last_active: dict[int, dt.date] = {}
    rows, next_user, day = [], 1, START
    while day <= END:
        for user, last in list(last_active.items()):
            away = (day - last).days
            p = ((0.6 if day < CHANGE else retention_after_change) if away == 1
                 else 0.2 if away <= 7 else 0.06 if away <= 28 else 0.01)
            if rng.random() < p:
                last_active[user] = day
        for _ in range(rng.randint(25, 35)):
            last_active[next_user] = day
            next_user += 1
        rows += [(user, dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc))
                 for user, last in last_active.items() if last == day]
        day += dt.timedelta(days=1)
    return rows


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    directory = tmp_path_factory.mktemp("growth_model")
    behaviors = []
    for name, seed, retention in (("stable", 3, 0.6), ("shifted", 4, 0.25)):
        write_parquet_source(directory / name / "part-1.parquet", simulate(seed, retention))
        behaviors.append({
            "name": name, "source": {"parquet": f"{name}/*.parquet", "where": "event_name = 'visit'"},
            "user_column": "uid", "time_column": "ts", "start_date": START, "end_date": END, "grains": ["daily"],
            "growth_model": {"window_days": WINDOW, "horizon_days": HORIZON, "scenarios": SCENARIOS}})
    config = write_config(directory, behaviors)
    instance = dg.DagsterInstance.ephemeral()
    failed = run_graph(config, instance)
    return {"db": directory / "warehouse.duckdb", "failed": failed, "instance": instance}


def _expected(graph, behavior: str):
    engagement = table_rows(graph["db"], f"{behavior}_engagement_daily")
    transitions = table_rows(graph["db"], f"{behavior}_engagement_transitions_daily")
    forecasts, rates = reference.growth_forecasts(engagement, transitions, START, WINDOW, HORIZON, SCENARIOS)
    return forecasts, rates, reference.growth_accuracy(forecasts, engagement)


def _keyed(rows: list[dict], key: tuple[str, ...]) -> dict:
    return {tuple(row[k] for k in key): {k: v for k, v in row.items() if k not in key} for row in rows}


def _assert_equal(got: list[dict], expected: list[dict], key: tuple[str, ...]) -> None:
    got, expected = _keyed(got, key), _keyed(expected, key)
    assert got.keys() == expected.keys()
    for k, row in expected.items():
        numbers = {c for c, v in row.items() if isinstance(v, float)}
        assert {c: v for c, v in got[k].items() if c not in numbers} == {c: v for c, v in row.items() if c not in numbers}, k
        assert {c: got[k][c] for c in numbers} == pytest.approx({c: row[c] for c in numbers}, rel=1e-9, abs=1e-9), k


def test_every_check_passed(graph):
    assert graph["failed"] == 0


@pytest.mark.parametrize("behavior", ["stable", "shifted"])
def test_the_three_relations_equal_the_independent_computation(graph, behavior):
    forecasts, rates, accuracy = _expected(graph, behavior)
    assert min(r["period_start"] for r in forecasts) == START + dt.timedelta(days=WINDOW)  # the first full window
    assert len({r["scenario"] for r in forecasts}) == 1 + len(SCENARIOS)
    _assert_equal(table_rows(graph["db"], f"{behavior}_forecast_daily"), forecasts, ("period_start", "scenario", "horizon"))
    _assert_equal(table_rows(graph["db"], f"{behavior}_forecast_rates_daily"), rates,
                  ("period_start", "from_state", "to_state"))
    _assert_equal(table_rows(graph["db"], f"{behavior}_forecast_accuracy_daily"), accuracy,
                  ("period_start", "horizon", "measure"))


def _mean_abs_error(graph, behavior: str, horizon: int, first: dt.date, last: dt.date) -> tuple[float, float]:
    rows = table_rows(graph["db"], f"{behavior}_forecast_accuracy_daily",
                      f"measure = 'dau' AND horizon = {horizon} AND period_start BETWEEN DATE '{first}' AND DATE '{last}'")
    assert rows
    errors = [r["relative_error"] for r in rows]
    return sum(map(abs, errors)) / len(errors), sum(errors) / len(errors)


def test_the_accuracy_shows_the_retention_change(graph):
    """In a stable regime the week-ahead DAU forecast is close; once retention drops, the forecasts
    made before the drop overshoot (positive errors), several times the stable error."""
    settled = START + dt.timedelta(days=60)  # the population of returning users has built up
    stable_error, _ = _mean_abs_error(graph, "stable", 7, settled, END)
    before, _ = _mean_abs_error(graph, "shifted", 7, settled, CHANGE - dt.timedelta(days=1))
    after, signed = _mean_abs_error(graph, "shifted", 7, CHANGE + dt.timedelta(days=1), CHANGE + dt.timedelta(days=14))
    assert stable_error < 0.1 and before < 0.1
    assert after > 3 * max(stable_error, before)
    assert signed > 0  # forecast above what happened


def test_the_scenarios_move_dau_the_way_they_say(graph):
    rows = table_rows(graph["db"], "stable_forecast_daily", f"period_start = DATE '{END}' AND horizon = {HORIZON}")
    dau = {r["scenario"]: r["dau"] for r in rows}
    assert dau["onboarding"] > dau["baseline"] and dau["everyone_back"] > dau["onboarding"]
    assert dau["worse_and_fewer"] < dau["baseline"]


def test_the_ui_plots_the_projections_rates_and_errors_of_each_day(graph):
    """Each day's materialization carries what the UI plots: DAU and MAU at 7, 28 and H days per
    scenario, each state's next-day retention, and the errors with their mean over 28 days."""
    def metadata(table: str, day: dt.date) -> dict:
        records = graph["instance"].fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(table), asset_partitions=[day.isoformat()]), limit=1).records
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}

    day = END - dt.timedelta(days=3)
    forecast = metadata("shifted_forecast_daily", day)
    rows = _keyed(table_rows(graph["db"], "shifted_forecast_daily", f"period_start = DATE '{day}'"), ("scenario", "horizon"))
    for scenario in ("baseline", *SCENARIOS):
        for k in (7, 28, HORIZON):
            assert forecast[f"{scenario}_dau_{k}d"] == rows[(scenario, k)]["dau"]
            assert forecast[f"{scenario}_mau_{k}d"] == rows[(scenario, k)]["mau"]
    rates = metadata("shifted_forecast_rates_daily", day)
    transitions = table_rows(graph["db"], "shifted_engagement_transitions_daily",
                             f"period_start BETWEEN DATE '{day - dt.timedelta(days=WINDOW - 1)}' AND DATE '{day}'"
                             " AND from_state = 'current'")
    back = sum(r["users"] for r in transitions if r["to_state"] in reference.ACTIVE_ENGAGEMENT)
    assert rates["curr"] == pytest.approx(back / sum(r["users"] for r in transitions))
    accuracy = metadata("shifted_forecast_accuracy_daily", day)
    errors = table_rows(graph["db"], "shifted_forecast_accuracy_daily",
                        f"measure = 'dau' AND horizon = 7 AND period_start BETWEEN DATE '{day - dt.timedelta(days=27)}'"
                        f" AND DATE '{day}'")
    assert len(errors) == 28
    assert accuracy["dau_abs_error_7d_mean_28d"] == pytest.approx(sum(abs(r["relative_error"]) for r in errors) / 28)
    assert accuracy["dau_error_7d"] == next(r["relative_error"] for r in errors if r["period_start"] == day)


def test_the_report_shows_forecast_levers_and_error(graph, tmp_path):
    """The daily page draws the forecasts per scenario, the levers (DAU at H for +1 pp on each rate and
    +10 % new users, from the reference's arithmetic, biggest first) and the error; the landing page
    the projected DAU at H and the biggest lever."""
    from activation_assets.config import load_config
    from activation_assets.report.html import write_reports

    from .test_segments import _csv

    config = load_config(graph["db"].parent / "activation.yaml")
    index, _ = write_reports(config, [config.behavior("stable")], None, tmp_path / "r")
    page = (index.parent / "stable_daily.html").read_text()
    for chart in ("forecast", "levers", "forecast_error"):
        assert f"data-chart='{chart}'" in page
    engagement = table_rows(graph["db"], "stable_engagement_daily")
    transitions = table_rows(graph["db"], "stable_engagement_transitions_daily")
    forecasts, _, accuracy = _expected(graph, "stable")
    assert {r["scenario"] for r in _csv(page, "forecast")} == {"baseline", *SCENARIOS}

    def dau_at_horizon(changes: dict) -> float:
        window = [r for r in engagement if END - dt.timedelta(days=WINDOW) < r["period_start"] <= END]
        rows, _ = reference.growth_forecasts(window, transitions, END - dt.timedelta(days=WINDOW), WINDOW, HORIZON,
                                             {"lever": changes})  # the forecast of END alone
        return next(r["dau"] for r in rows if r["period_start"] == END and r["scenario"] == "lever"
                    and r["horizon"] == HORIZON)

    base = next(r["dau"] for r in forecasts if r["period_start"] == END and r["scenario"] == "baseline"
                and r["horizon"] == HORIZON)
    expected = {rate: dau_at_horizon({rate: 0.01}) - base for rate in reference.RATE_OF}
    expected["new_users"] = dau_at_horizon({"new_users": 1.1}) - base
    levers = _csv(page, "levers")
    assert {r["lever"]: float(r["dau_gained"]) for r in levers} == pytest.approx(expected, rel=1e-9, abs=1e-6)
    gains = [float(r["dau_gained"]) for r in levers]
    assert gains == sorted(gains, reverse=True)
    errors = {r["period_start"]: r for r in _csv(page, "forecast_error")}
    for row in accuracy:
        if row["measure"] == "dau" and row["horizon"] in (7, 28):
            assert float(errors[str(row["period_start"])][f"dau_error_{row['horizon']}d"]) == pytest.approx(
                row["relative_error"])
    landing = index.read_text()
    assert f"DAU in {HORIZON} days (forecast of {END})</div><div class='value'>{base:,.0f}" in landing
    top = max(expected, key=expected.get)
    label = "+10 % new users" if top == "new_users" else f"+1 pp {top.upper()}"
    assert f"biggest lever</div><div class='value'>{label}" in landing


def test_a_forecast_written_before_what_it_reads_is_outdated(graph, tmp_path):
    """An engagement day written again outdates the forecasts whose window holds it; a forecast
    written again, the accuracy of the days it was made for."""
    import shutil

    import duckdb

    from activation_assets.config import load_config
    from activation_assets.pipeline.changes import outdated_forecasts

    copy = tmp_path / "copy.duckdb"
    shutil.copy(graph["db"], copy)
    behavior = load_config(graph["db"].parent / "activation.yaml").behavior("stable")
    engagement_day, forecast_day = dt.date(2025, 3, 3), dt.date(2025, 4, 10)
    with duckdb.connect(str(copy)) as conn:
        assert outdated_forecasts(conn, behavior, END).rebuilt_inputs == {}
        conn.execute("UPDATE _activation_partitions SET written_at = written_at + INTERVAL 1 DAY"
                     " WHERE (table_name = 'stable_engagement_daily' AND period_start = ?)"
                     " OR (table_name = 'stable_forecast_daily' AND period_start = ?)", [engagement_day, forecast_day])
        outdated = outdated_forecasts(conn, behavior, END)
    window = {engagement_day + dt.timedelta(days=i) for i in range(WINDOW)}
    accuracy = {forecast_day + dt.timedelta(days=h) for h in (1, 7, 28) if forecast_day + dt.timedelta(days=h) <= END}
    assert set(outdated.rebuilt_inputs) == window | accuracy
    assert "stable_engagement_daily 2025-03-03 was written after stable_forecast_daily 2025-03-03" in \
        outdated.rebuilt_inputs[engagement_day]
    assert outdated.missing == []


def test_the_accuracy_alone_without_forecasts_says_what_to_materialize(graph, tmp_path):
    import shutil

    import duckdb

    from activation_assets.config import load_config
    from activation_assets.engines import ActivationError
    from activation_assets.pipeline.steps import materialize_forecasts

    copy = tmp_path / "copy.duckdb"
    shutil.copy(graph["db"], copy)
    behavior = load_config(graph["db"].parent / "activation.yaml").behavior("stable")
    with duckdb.connect(str(copy)) as conn:
        conn.execute("DROP TABLE stable_forecast_daily")
        with pytest.raises(ActivationError, match="stable_forecast_daily, which has never been materialized"):
            materialize_forecasts(conn, behavior, [behavior.forecast_start], ["stable_forecast_accuracy_daily"])
        # With earlier days, it names the first of them that is missing.
        conn.execute("DELETE FROM _activation_partitions WHERE table_name = 'stable_forecast_daily'")
        with pytest.raises(ActivationError, match="it is computed from stable_forecast_daily"):
            materialize_forecasts(conn, behavior, [END], ["stable_forecast_accuracy_daily"])
