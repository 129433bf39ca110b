"""The named jobs and what the `activation_daily` sensor requests, on hand-worked calendars."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from activation_assets.config import Grain, load_config
from activation_assets.orchestration.definitions import build_defs
from activation_assets.orchestration.jobs import DAILY_SENSOR, RANGE_END, RANGE_START, newest_requests
from activation_assets.orchestration.partitions import forecast_partitions_def, in_view, partitions_def
from activation_assets.tables import grain_tables

from .. import reference
from ..conftest import edge_events, small_behavior

# Saturday 2025-03-01 to Saturday 2025-04-12, weeks from Monday: days 03-01..04-12 (43), weeks
# 02-24..04-07 (the last one, 04-07..04-13, is complete only after 04-13), months 03-01 and 04-01
# (April is complete only after 04-30, but end_date cuts it at 04-12).
SPEC = reference.Spec("UTC", dt.date(2025, 3, 1), dt.date(2025, 4, 12), "monday")
NOW = dt.datetime(2025, 4, 10, 6, tzinfo=dt.timezone.utc)  # days up to 04-09 are complete


def days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def behavior(tmp_path):
    config = small_behavior(tmp_path, SPEC, edge_events(SPEC, seed=3, users=list(range(1, 8))), grains=["daily", "weekly"])
    return load_config(config)


def requests(b, done: dict[str, list[str]]):
    return {(r.job_name, r.tags[RANGE_START], r.tags[RANGE_END]): r.run_key
            for r in newest_requests(b, NOW, lambda table: set(done.get(table, [])))}


def test_each_behavior_has_a_fact_job_and_one_per_grain_over_its_tables(tmp_path):
    config = behavior(tmp_path)
    b = config.behaviors[0]
    defs = build_defs(config)
    for name, keys in [("visited_fact", ["fact_visited"]), ("visited_daily", grain_tables(b, Grain.daily)),
                       ("visited_weekly", grain_tables(b, Grain.weekly))]:
        job = defs.resolve_job_def(name)
        assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(keys)
    sensor = defs.resolve_sensor_def(DAILY_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_the_daily_sensor_writes_the_fact_first_then_each_grain_from_its_first_missing_period(tmp_path):
    b = behavior(tmp_path).behaviors[0]
    daily, weekly = grain_tables(b, Grain.daily), grain_tables(b, Grain.weekly)
    # Nothing written: only the fact, every complete day; the grains wait for it.
    assert requests(b, {}) == {("visited_fact", "2025-03-01", "2025-04-09"): "visited_fact:2025-03-01..2025-04-09"}
    # The fact written to 04-07, the daily grain to 04-03 (one table only to 04-02), weekly none: the
    # fact's two missing days; every week that ended (02-24, from 03-01, to 03-31, ending 04-06) reads
    # written days only; the daily grain waits, as its missing days reach 04-08 and 04-09.
    done = {"fact_visited": days("2025-03-01", "2025-04-07")}
    done |= {t: days("2025-03-01", "2025-04-03") for t in daily} | {daily[-1]: days("2025-03-01", "2025-04-02")}
    assert requests(b, done) == {("visited_fact", "2025-04-08", "2025-04-09"): "visited_fact:2025-04-08..2025-04-09",
                                 ("visited_weekly", "2025-02-24", "2025-03-31"): "visited_weekly:2025-02-24..2025-03-31"}
    # Every fact day written: the daily grain from 04-03 (missing from one table) to 04-09.
    done["fact_visited"] = days("2025-03-01", "2025-04-09")
    done |= {t: ["2025-02-24", "2025-03-03", "2025-03-10", "2025-03-17", "2025-03-24", "2025-03-31"] for t in weekly}
    assert set(requests(b, done)) == {("visited_daily", "2025-04-03", "2025-04-09")}
    # Everything up to date: nothing.
    done |= {t: days("2025-03-01", "2025-04-09") for t in daily}
    assert requests(b, done) == {}


def _plotted(definition, now: dt.datetime) -> list[str]:
    """The partition keys the UI's Plots tab charts: `partitionKeyConnection(limit: 120,
    ascending: false)`, as the webserver resolves it at `now`."""
    from dagster._core.definitions.partitions.context import PartitionLoadingContext
    from dagster._core.definitions.temporal_context import TemporalContext

    context = PartitionLoadingContext(temporal_context=TemporalContext(effective_dt=now, last_event_id=None),
                                      dynamic_partitions_store=None)
    return definition.get_paginated_partition_keys(context=context, limit=120, ascending=False).results


def test_the_plots_of_a_window_that_ended_long_ago_end_on_its_last_partition(tmp_path):
    """Every partitioned asset and job carries a definition whose plotted keys are its last
    partitions, newest first, from the day they are loaded on; its partitions stay the same then and
    later. Without the shift Dagster 1.13 charts the 120 periods before now (docs/dagster.md)."""

    config = behavior(tmp_path)
    b = config.behaviors[0]
    now = dt.datetime.now(dt.timezone.utc)
    for grain, last in [(Grain.daily, "2025-04-12"), (Grain.weekly, "2025-03-31")]:
        plain = partitions_def(b, grain)
        keys = plain.get_partition_keys()
        assert keys[-1] == last
        assert _plotted(plain, now)[0] > last  # Dagster's bug: the day this fails, drop `in_view`
        shown = in_view(plain)
        assert _plotted(shown, now) == keys[::-1][:120]
        for later in (dt.timedelta(hours=1), dt.timedelta(days=3), dt.timedelta(days=400)):
            assert shown.get_partition_keys(current_time=now + later) == keys
    defs = build_defs(config)
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        definition = graph.get(key).partitions_def
        if definition is not None:
            assert _plotted(definition, now)[0] == definition.get_partition_keys()[-1], key
    for name in ("visited_fact", "visited_daily", "visited_weekly"):
        assert defs.resolve_job_def(name).partitions_def.end_offset < 0
    # A window that is still open has its newest partitions in view as it is.
    open_ended = b.model_copy(update={"end_date": None})
    assert in_view(partitions_def(open_ended, Grain.daily)) == partitions_def(open_ended, Grain.daily)


def test_materialize_waits_for_the_runs_and_backfills_in_flight_that_write_its_assets(tmp_path, capsys, monkeypatch):
    """A run of the UI (started) and a backfill (requested) that write this behavior's assets are
    named, and the command waits until they are over; a run of other assets is not its business."""
    import time

    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

    from activation_assets.cli import runner

    config = behavior(tmp_path)
    b = config.behaviors[0]
    defs = build_defs(config)
    keys = {"fact_visited", *grain_tables(b, Grain.daily)}
    with dg.DagsterInstance.ephemeral() as instance:
        daily = defs.resolve_job_def("visited_daily")
        run = instance.create_run_for_job(
            daily, status=dg.DagsterRunStatus.STARTED, asset_selection=frozenset({dg.AssetKey("visited_activation_daily")}),
            tags={RANGE_START: "2025-03-01", RANGE_END: "2025-03-09"})
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="bfwait", asset_graph=defs.resolve_asset_graph(), partition_names=["2025-03-01"],
            asset_selection=[dg.AssetKey("fact_visited")], backfill_timestamp=time.time(), tags={},
            dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None)
        instance.add_backfill(backfill)
        assert runner.in_flight(instance, {"visited_firstlast_weekly"}) == []  # neither writes it
        assert runner.in_flight(instance, keys) == [
            f"run {run.run_id[:8]} (visited_daily 2025-03-01..2025-03-09, started)",
            "backfill bfwait (1 of its assets are this command's)"]

        # They finish while the command waits: in its first pause, in this thread (a second thread
        # writing the instance's SQLite while this one polls it can meet "database table is locked").
        pauses: list[float] = []

        def pause(seconds: float) -> None:
            if not pauses:
                instance.report_run_failed(run)
                instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
            pauses.append(seconds)

        monkeypatch.setattr(runner.time, "sleep", pause)
        runner.wait_for_in_flight(instance, keys, poll_seconds=0.1)
        assert pauses == [0.1]  # it waited once, then saw both over
    said = capsys.readouterr().out
    assert said.count("waiting for 2 run(s) or backfill(s) of this instance that write these assets") == 1, said


def test_the_growth_model_has_its_own_job_partitions_and_sensor_requests(tmp_path):
    """Forecasts start at start_date + L (03-08 with L = 7), run as `visited_forecast` once the days
    of the daily grain they read are written, and follow a rebuilt daily grain in the CLI's plan."""
    from activation_assets.pipeline import plan as planning
    from activation_assets.tables import forecast_tables

    config = load_config(small_behavior(tmp_path, SPEC, edge_events(SPEC, seed=3, users=list(range(1, 8))),
                                        grains=["daily"], growth_model={"window_days": 7, "horizon_days": 10}))
    b = config.behaviors[0]
    defs = build_defs(config)
    job = defs.resolve_job_def("visited_forecast")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(forecast_tables(b))
    assert job.partitions_def == in_view(forecast_partitions_def(b))
    assert forecast_partitions_def(b).get_partition_keys(current_time=NOW) == days("2025-03-08", "2025-04-09")
    daily, engagement = grain_tables(b, Grain.daily), forecast_tables(b)
    done = {"fact_visited": days("2025-03-01", "2025-04-09")} | {t: days("2025-03-01", "2025-04-05") for t in daily}
    # The daily grain misses 04-06..04-09: the forecasts of those days wait; the earlier ones go.
    assert set(requests(b, done)) == {("visited_daily", "2025-04-06", "2025-04-09"),
                                      ("visited_forecast", "2025-03-08", "2025-04-05")}
    done |= {t: days("2025-03-01", "2025-04-09") for t in daily} | {t: days("2025-03-08", "2025-04-09") for t in engagement}
    assert requests(b, done) == {}
    # The plan: after the daily grain, from its first rebuilt day (not before 03-08), or from the first
    # forecast day missing.
    written = {k: {dt.date.fromisoformat(d) for d in v} for k, v in done.items()}
    runs = planning.plan(config, [b], None, None, None, lambda t: written.get(t, set()),
                         today=dt.date(2025, 4, 10), rebuilt_from={("visited", Grain.daily): dt.date(2025, 4, 2)})
    assert [(r.job, r.periods[0], r.periods[-1]) for r in runs] == [
        ("visited_daily", dt.date(2025, 4, 2), dt.date(2025, 4, 9)),
        ("visited_forecast", dt.date(2025, 4, 2), dt.date(2025, 4, 9))]
    written[engagement[2]].discard(dt.date(2025, 3, 20))
    runs = planning.plan(config, [b], None, None, None, lambda t: written.get(t, set()), today=dt.date(2025, 4, 10))
    assert [(r.job, r.periods[0], r.periods[-1]) for r in runs] == [
        ("visited_forecast", dt.date(2025, 3, 20), dt.date(2025, 4, 9))]
