"""Dagster partition definitions: one per behavior and grain, keyed by period start (YYYY-MM-DD).

`partitions_def` and `forecast_partitions_def` are the periods the layer computes with;
`in_view` is the form the assets and jobs carry, whose plots in the UI end on the last period."""

from __future__ import annotations

import functools

import dagster as dg

from activation_assets.config import BehaviorConfig, Grain
from activation_assets.periods import end_exclusive, first_period, periods_for

PARTITION_FORMAT = "%Y-%m-%d"


def partitions_def(behavior: BehaviorConfig, grain: Grain) -> dg.TimeWindowPartitionsDefinition:
    """Complete periods only: Dagster's time windows never include the running period of the
    behavior's timezone, and `end` (exclusive) cuts the periods that end after `end_date`."""
    return _periods(behavior, grain, first_period(behavior, grain).isoformat())


def fact_partitions_def(behavior: BehaviorConfig) -> dg.TimeWindowPartitionsDefinition:
    return partitions_def(behavior, Grain.daily)


def forecast_partitions_def(behavior: BehaviorConfig) -> dg.TimeWindowPartitionsDefinition:
    """The growth model's days: the daily grain's, from the first with a full window (start_date + L)."""
    return _periods(behavior, Grain.daily, behavior.forecast_start.isoformat())


def _periods(behavior: BehaviorConfig, grain: Grain, start: str) -> dg.TimeWindowPartitionsDefinition:
    end = end_exclusive(behavior, grain)
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=periods_for(behavior, grain).cron, start=start, end=end.isoformat() if end else None,
        fmt=PARTITION_FORMAT, timezone=behavior.timezone)


@functools.cache
def in_view(definition: dg.TimeWindowPartitionsDefinition) -> dg.TimeWindowPartitionsDefinition:
    """The same partitions, from now on, with the UI's plots ending on the last one.

    Dagster 1.13's Plots tab asks for the last 120 partition keys, which
    `get_paginated_partition_keys` counts back from now, honouring a negative `end_offset` but not
    `end`: for a window that ended long ago it would chart periods after it, where nothing exists.
    So a definition whose `end` is behind now gets `end_offset` = minus the periods between them,
    which leaves its partitions as they are at any time from now on (`end` still bounds them) and
    moves the plots' window back onto them. Periods that end afterwards drift the plots' right edge
    one period past the end each until the definitions are loaded again (docs/dagster.md). Cached,
    so that every asset and job of one process carries the same definition."""
    if definition.end is None:
        return definition
    unbounded = dg.TimeWindowPartitionsDefinition(
        cron_schedule=definition.cron_schedule, start=definition.start, end=None, fmt=definition.fmt,
        timezone=definition.timezone)
    behind = unbounded.get_num_partitions() - definition.get_num_partitions()
    if behind <= 0:
        return definition
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=definition.cron_schedule, start=definition.start, end=definition.end,
        fmt=definition.fmt, timezone=definition.timezone, end_offset=-behind)
