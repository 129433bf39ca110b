"""Dagster partition definitions: one per behavior and grain, keyed by period start (YYYY-MM-DD)."""

from __future__ import annotations

import dagster as dg

from activation_assets.config import BehaviorConfig, Grain
from activation_assets.periods import end_exclusive, first_period, periods_for

PARTITION_FORMAT = "%Y-%m-%d"


def partitions_def(behavior: BehaviorConfig, grain: Grain) -> dg.TimeWindowPartitionsDefinition:
    """Complete periods only: Dagster's time windows never include the running period of the
    behavior's timezone, and `end` (exclusive) cuts the periods that end after `end_date`."""
    end = end_exclusive(behavior, grain)
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=periods_for(behavior, grain).cron,
        start=first_period(behavior, grain).isoformat(),
        end=end.isoformat() if end else None,
        fmt=PARTITION_FORMAT,
        timezone=behavior.timezone,
    )


def fact_partitions_def(behavior: BehaviorConfig) -> dg.TimeWindowPartitionsDefinition:
    return partitions_def(behavior, Grain.daily)


def forecast_partitions_def(behavior: BehaviorConfig) -> dg.TimeWindowPartitionsDefinition:
    """The growth model's days: the daily grain's, from the first with a full window (start_date + L)."""
    end = end_exclusive(behavior, Grain.daily)
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=periods_for(behavior, Grain.daily).cron,
        start=behavior.forecast_start.isoformat(),
        end=end.isoformat() if end else None,
        fmt=PARTITION_FORMAT,
        timezone=behavior.timezone,
    )
