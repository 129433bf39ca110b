"""Before Dagster starts: every selected source read once (all problems in one message), settings that
changed since the tables were built reconciled, and sources that ended long ago noted."""

from __future__ import annotations

import datetime as dt

from activation_assets.config import ActivationConfig, BehaviorConfig, Grain
from activation_assets.engines import ActivationError, open_for_reading, open_warehouse
from activation_assets.periods import existing_periods
from activation_assets.pipeline.steps import (
    check_source_columns, day_files, describe_source, reconcile_definition, segment_values, source_last_day,
    unparseable_times,
)
from activation_assets.cli.output import CommandError, say


# --- before Dagster starts ------------------------------------------------------------------------


def preflight(config: ActivationConfig, behaviors: list[BehaviorConfig], every_file: bool = False,
              values: dict[str, dict] | None = None) -> dict[str, dt.date | None]:
    """Read every selected source before Dagster starts: all problems in one message, printed once,
    and nothing created (no database file, no Dagster instance). Returns, for behaviors without
    end_date, the local date of their source's last event.

    A source in Hive-style day directories is read through its newest day's files only, so that a
    daily run does not open a year of files first (`validate` reads them all: `every_file`).
    With `values`, each behavior's segment values in the source are put there (`steps.segment_values`).
    """
    problems: list[str] = []
    last_days: dict[str, dt.date | None] = {}
    with open_for_reading(config) as warehouse:
        for behavior in behaviors:
            days = [] if every_file else existing_periods(behavior, Grain.daily)
            files = day_files(behavior, days[-1], days[-1]) if days else None
            try:
                relation, columns = describe_source(warehouse, behavior, files)
                time_type = check_source_columns(behavior, columns)
                if behavior.end_date is None:
                    last_days[behavior.name] = source_last_day(warehouse, behavior, relation, time_type)
                if values is not None and behavior.segments:
                    values[behavior.name] = segment_values(warehouse, behavior, relation)
                unparseable = unparseable_times(warehouse, behavior, relation, time_type) if every_file else None
                if unparseable:
                    problems.append(unparseable)
            except ActivationError as exc:
                problems.append(str(exc))
    if problems:
        raise CommandError(f"{config.path}: the source of a behavior cannot be used:\n  - " + "\n  - ".join(problems))
    return last_days


def reconcile(config: ActivationConfig, behaviors: list[BehaviorConfig]) -> None:
    """Forget partitions built with settings that changed since (window, timezone, week start), so
    that planning sees them as missing and the tables end up as a fresh run would make them."""
    with open_warehouse(config) as warehouse:
        for behavior in behaviors:
            changed = reconcile_definition(warehouse, behavior)
            if changed:
                say(f"behavior {behavior.name!r}: {', '.join(changed)}; the partitions this changes are"
                    " built again")
