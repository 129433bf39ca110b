"""Named jobs, so a run says what it writes, and the daily sensor that keeps the newest periods built.

Each behavior has a job for its fact days (`<b>_fact`), one per grain (`<b>_daily`, ...) and, with
`growth_model:`, one for its forecasts (`<b>_forecast`, days from start_date + L), each over one
partitions definition. `activation materialize` runs them, a UI backfill of a grain's
assets is theirs, and so is every run the `activation_daily` sensor requests.

The sensor ticks hourly, shipped stopped: for each behavior it requests the fact days missing up to
the newest complete day, and for each grain, once every fact day it reads is written, the periods
from the first one missing up to the newest complete one, each as one range run; then the forecast
days from the first missing one as far as the daily grain is written. A schedule would
target a single job, and a grain must wait for its fact days: that is a sensor's work.
"""

from __future__ import annotations

import datetime as dt
import itertools

import dagster as dg

from activation_assets.config import ActivationConfig, BehaviorConfig
from activation_assets.models import sql
from activation_assets.orchestration.partitions import (
    PARTITION_FORMAT, fact_partitions_def, forecast_partitions_def, in_view, partitions_def,
)
from activation_assets.pipeline.steps import fact_days
from activation_assets.tables import FORECAST_JOB, forecast_tables, grain_tables, job_name

DAILY_SENSOR = "activation_daily"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def behavior_jobs(behavior: BehaviorConfig) -> list[dg.UnresolvedAssetJobDefinition]:
    fact = sql.fact_table(behavior.name)
    jobs = [dg.define_asset_job(
        job_name(behavior.name, None), selection=dg.AssetSelection.assets(fact),
        partitions_def=in_view(fact_partitions_def(behavior)),
        description=f"{behavior.name}: the fact's days from the source, and the check that they still match it.")]
    for grain in behavior.grains:
        jobs.append(dg.define_asset_job(
            job_name(behavior.name, grain), selection=dg.AssetSelection.assets(*grain_tables(behavior, grain)),
            partitions_def=in_view(partitions_def(behavior, grain)),
            description=f"{behavior.name}, {grain.value}: FirstLast, activation and every model read off it,"
            " with their checks."))
    if behavior.growth_model:
        jobs.append(dg.define_asset_job(
            job_name(behavior.name, FORECAST_JOB), selection=dg.AssetSelection.assets(*forecast_tables(behavior)),
            partitions_def=in_view(forecast_partitions_def(behavior)),
            description=f"{behavior.name}: the growth model's forecasts, rates and accuracy, with their checks."))
    return jobs


def range_request(job: str, keys: list[str]) -> dg.RunRequest:
    """One run over consecutive partitions (the assets' single-run backfill policy)."""
    first, last = keys[0], keys[-1]
    return dg.RunRequest(run_key=f"{job}:{first}..{last}", job_name=job, tags={RANGE_START: first, RANGE_END: last})


def _from_first_missing(keys: list[str], done: set[str]) -> list[str]:
    missing = [i for i, key in enumerate(keys) if key not in done]
    return keys[missing[0]:] if missing else []


def newest_requests(behavior: BehaviorConfig, now: dt.datetime, materialized) -> list[dg.RunRequest]:
    """What the daily sensor asks for one behavior at `now`; `materialized(key)` is the set of an
    asset's materialized partition keys."""
    fact = sql.fact_table(behavior.name)
    fact_done = materialized(fact)
    days = fact_partitions_def(behavior).get_partition_keys(current_time=now)
    todo = [day for day in days if day not in fact_done]
    requests = [range_request(job_name(behavior.name, None), todo)] if todo else []
    for grain in behavior.grains:
        keys = partitions_def(behavior, grain).get_partition_keys(current_time=now)
        done = set.intersection(*(set(materialized(table)) for table in grain_tables(behavior, grain)))
        periods = _from_first_missing(keys, done)
        reads = {d.strftime(PARTITION_FORMAT) for p in periods
                 for d in fact_days(behavior, grain, dt.date.fromisoformat(p))}
        if periods and reads <= fact_done:  # otherwise next tick, after the fact run
            requests.append(range_request(job_name(behavior.name, grain), periods))
    if behavior.growth_model:
        keys = forecast_partitions_def(behavior).get_partition_keys(current_time=now)
        done = set.intersection(*(set(materialized(table)) for table in forecast_tables(behavior)))
        engagement = set.intersection(*(set(materialized(t)) for t in sql.engagement_tables(behavior.name)[:2]))
        days = list(itertools.takewhile(engagement.__contains__, _from_first_missing(keys, done)))
        if days:  # the days whose engagement is written; the rest next tick, after the daily run
            requests.append(range_request(job_name(behavior.name, FORECAST_JOB), days))
    return requests


def daily_sensor(config: ActivationConfig, jobs: list[dg.UnresolvedAssetJobDefinition]) -> dg.SensorDefinition:
    @dg.sensor(
        name=DAILY_SENSOR, jobs=jobs, minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.STOPPED,  # opt in from the UI: Automation -> activation_daily
        description="Every hour: the fact days missing up to the newest complete day, then each grain's"
        " periods from the first missing one to the newest complete one, once their fact days are written."
        " Each as one run of the behavior's named job.",
    )
    def _daily(context: dg.SensorEvaluationContext):
        now = dt.datetime.now(dt.timezone.utc)
        def materialized(table: str) -> set[str]:
            return set(context.instance.get_materialized_partitions(dg.AssetKey(table)))
        requests = [r for behavior in config.behaviors for r in newest_requests(behavior, now, materialized)]
        return requests or dg.SkipReason("every behavior's newest complete periods are built")

    return _daily
