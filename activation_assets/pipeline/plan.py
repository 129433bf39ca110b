"""What to rebuild, decided once for `activation materialize`, `activation status` and the source-changes
sensor (no Dagster here): which fact days and partitions are missing or outdated, and the runs that
bring them up to date, in dependency order.

A grain is rebuilt from its first period that is missing, reads a fact day written now, or was built
before one of its inputs was written again: every later period builds on it (`rebuild_from`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from activation_assets.config import ActivationConfig, BehaviorConfig, Grain
from activation_assets.engines import Warehouse, open_warehouse
from activation_assets.models import sql
from activation_assets.periods import existing_periods, periods_for
from activation_assets.pipeline.changes import SourceChanges, detect, outdated_forecasts, outdated_partitions
from activation_assets.tables import FORECAST_JOB, forecast_tables, grain_tables, job_name



# --- the one decision ------------------------------------------------------------------------------


def rebuild_from(
    behavior: BehaviorConfig, grain: Grain, periods: list[dt.date], fact_days: Iterable[dt.date],
    done: Callable[[str], set[dt.date]] | None, rebuilt: dt.date | None,
) -> dt.date | None:
    """The first period of a grain to build again: one that reads a fact day written now (`fact_days`),
    is missing from one of the grain's tables (`done(table)`: its materialized partitions; None: missing
    ones are not this caller's business), or was built before one of its inputs was written again
    (from `rebuilt` on). Every later period builds on it, so all of them are built again too."""
    calendar = periods_for(behavior, grain)
    touched = {calendar.start_of(d) for d in fact_days}
    keys = grain_tables(behavior, grain)
    for period in periods:
        if (period in touched or (rebuilt is not None and period >= rebuilt)
                or (done is not None and any(period not in done(k) for k in keys))):
            return period
    return None


# --- planning ------------------------------------------------------------------------------------


@dataclass
class Run:
    behavior: BehaviorConfig
    label: str
    keys: list[str]
    periods: list[dt.date]
    # A fact run checks that every fact day matches its source; while later fact runs of the same
    # behavior are still to come that check would fail on their days, so only the last one runs it.
    checks: bool = True
    grain: Grain | str | None = None  # None: the fact's days; FORECAST_JOB: the growth model's

    @property
    def job(self) -> str:
        return job_name(self.behavior.name, self.grain)


def _contiguous(days: list[dt.date], step) -> list[list[dt.date]]:
    groups: list[list[dt.date]] = []
    for day in sorted(days):
        if groups and step(groups[-1][-1]) == day:
            groups[-1].append(day)
        else:
            groups.append([day])
    return groups


def plan(
    config: ActivationConfig, behaviors: list[BehaviorConfig], grains: list[Grain] | None,
    start: dt.date | None, end: dt.date | None, done, today: dt.date | None = None,
    outdated_days: dict[str, set[dt.date]] | None = None,
    rebuilt_from: dict[tuple[str, Grain | str], dt.date] | None = None,
) -> list[Run]:
    """The runs to make, in order. `done(table)` is the set of partitions already materialized.

    Without a window: the missing and `outdated_days` fact days, and for each grain everything from
    the first period that is missing, reads a fact day written now, or was built before one of its
    inputs was written again (`rebuilt_from`). With --from/--to: the fact days of the window,
    and for each grain the periods from the one containing --from that end by --to, plus every later
    period already materialized (each builds on its predecessor, so all of them change).
    The growth model's days follow the daily grain's: from its first rebuilt day (or --from), the
    first missing one, or the first written before what it reads was written again.
    """
    runs: list[Run] = []
    windowed = start is not None or end is not None
    for behavior in behaviors:
        daily = periods_for(behavior, Grain.daily)
        days = [d for d in existing_periods(behavior, Grain.daily, today)
                if (start is None or d >= start) and (end is None or d <= end)]
        fact = sql.fact_table(behavior.name)
        outdated = (outdated_days or {}).get(behavior.name, set())
        fact_days = days if windowed else [d for d in days if d not in done(fact) or d in outdated]
        groups = _contiguous(fact_days, daily.next)
        for number, group in enumerate(groups, 1):
            runs.append(Run(behavior, fact, [fact], group, checks=number == len(groups)))
        for grain in [g for g in behavior.grains if grains is None or g in grains]:
            calendar = periods_for(behavior, grain)
            periods = existing_periods(behavior, grain, today)
            keys = grain_tables(behavior, grain)
            materialized = set.union(*(done(k) for k in keys))
            if windowed:
                first = calendar.start_of(start) if start else periods[0] if periods else None
                todo = [p for p in periods if first is not None and p >= first
                        and (end is None or calendar.last_day(p) <= end or p in materialized)]
            else:
                start_at = rebuild_from(behavior, grain, periods, fact_days, done,
                                        (rebuilt_from or {}).get((behavior.name, grain)))
                todo = [p for p in periods if start_at is not None and p >= start_at]
            if todo:
                runs.append(Run(behavior, f"{behavior.name} {grain.value}", keys, todo, grain=grain))
        if behavior.growth_model and Grain.daily in behavior.grains and (grains is None or Grain.daily in grains):
            daily_runs = [r for r in runs if r.behavior is behavior and r.grain is Grain.daily]
            todo = _forecast_days(behavior, today, start, end, done, daily_runs[0].periods[0] if daily_runs else None,
                                  (rebuilt_from or {}).get((behavior.name, FORECAST_JOB)))
            if todo:
                runs.append(Run(behavior, f"{behavior.name} forecast", forecast_tables(behavior), todo,
                                grain=FORECAST_JOB))
    return runs


def _forecast_days(
    behavior: BehaviorConfig, today: dt.date | None, start: dt.date | None, end: dt.date | None, done,
    daily_from: dt.date | None, rebuilt: dt.date | None,
) -> list[dt.date]:
    """The growth model's days to write: each reads the window's engagement days, and the accuracy
    the forecasts of up to 28 days before, so all of them from the first that changes."""
    days = [d for d in existing_periods(behavior, Grain.daily, today) if d >= behavior.forecast_start]
    keys = forecast_tables(behavior)
    if start is not None or end is not None:
        materialized = set.union(*(done(k) for k in keys))
        return [d for d in days if (start is None or d >= start) and (end is None or d <= end or d in materialized)]
    missing = next((d for d in days if any(d not in done(k) for k in keys)), None)
    first = min((d for d in (missing, daily_from, rebuilt) if d is not None), default=None)
    return [d for d in days if first is not None and d >= first]


@dataclass
class Findings:
    """What is outdated, per behavior: fact days whose source changed, and per grain why."""

    changes: dict[str, object]  # behavior -> changes.SourceChanges
    grains: dict[tuple[str, Grain], object]  # (behavior, grain) -> changes.Outdated

    def outdated_days(self) -> dict[str, set[dt.date]]:
        return {name: set(c.days) for name, c in self.changes.items()}

    def rebuilt_from(self) -> dict[tuple[str, Grain | str], dt.date]:
        return {key: o.first_rebuilt for key, o in self.grains.items() if o.rebuilt_inputs}


def find_outdated(config: ActivationConfig, behaviors: list[BehaviorConfig], grains: list[Grain] | None = None,
                  ) -> Findings:
    """Fact days whose source rows changed since they were written (reading only what changed), and
    the partitions that are missing or were built before one of their inputs was written again."""
    findings = Findings({}, {})
    with open_warehouse(config) as warehouse:
        for behavior in behaviors:
            changes = detect(warehouse, behavior)
            findings.changes[behavior.name] = changes
            for grain in [g for g in behavior.grains if grains is None or g in grains]:
                findings.grains[(behavior.name, grain)] = outdated_partitions(
                    warehouse, behavior, grain, changes.days)
            if behavior.growth_model and (grains is None or Grain.daily in grains):
                findings.grains[(behavior.name, FORECAST_JOB)] = outdated_forecasts(warehouse, behavior)
    return findings


def affected(
    behavior: BehaviorConfig, warehouse: Warehouse, look_at_source: bool = True,
) -> tuple[SourceChanges, set[tuple[str, dt.date]]]:
    """What the source-changes sensor backfills: the outdated fact days, and every (asset, partition)
    to rebuild because of them or because it was built before an input was written again, from
    `rebuild_from` to the last one materialized (missing partitions are the automation's to fill).
    Without `look_at_source` (an upstream asset not materialized since the last look) the source is
    not read again."""
    changes = detect(warehouse, behavior) if look_at_source else SourceChanges(
        behavior.name, read="nothing (upstream unchanged)")
    targets = {(sql.fact_table(behavior.name), day) for day in changes.days}
    for grain in behavior.grains:
        outdated = outdated_partitions(warehouse, behavior, grain, changes.days)
        periods = existing_periods(behavior, grain)
        start = rebuild_from(behavior, grain, periods, changes.days, None, outdated.first_rebuilt)
        if start is None:
            continue
        logged = {p for _, p, _ in warehouse.log_entries(grain_tables(behavior, grain))}
        targets |= {(table, p) for table in grain_tables(behavior, grain)
                    for p in periods if p >= start and p in logged}
    if behavior.growth_model:
        daily = [p for table, p in targets if table == grain_tables(behavior, Grain.daily)[0]]
        outdated = outdated_forecasts(warehouse, behavior)
        first = min([*daily, *([outdated.first_rebuilt] if outdated.first_rebuilt else [])], default=None)
        if first is not None:
            logged = {p for _, p, _ in warehouse.log_entries(forecast_tables(behavior))}
            targets |= {(table, p) for table in forecast_tables(behavior) for p in logged if p >= first}
    return changes, targets
