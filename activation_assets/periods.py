"""Period arithmetic for one behavior's grain, in pure Python (dates only, no Dagster).

A period is named by its first day. Weekly periods start on the behavior's `week_start`; monthly
ones on the 1st. Only complete periods exist: the last one ends on or before `end_date`, or —
without it — has already ended in the behavior's timezone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from activation_assets.config import BehaviorConfig, Grain

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Periods:
    grain: Grain
    week_start: int = 0  # Monday = 0, as date.weekday()

    def start_of(self, day: dt.date) -> dt.date:
        """First day of the period that contains `day`."""
        if self.grain is Grain.daily:
            return day
        if self.grain is Grain.weekly:
            return day - dt.timedelta(days=(day.weekday() - self.week_start) % 7)
        return day.replace(day=1)

    def shift(self, start: dt.date, n: int) -> dt.date:
        """The period `n` periods after (before, when negative) the one starting at `start`."""
        if self.grain is Grain.daily:
            return start + dt.timedelta(days=n)
        if self.grain is Grain.weekly:
            return start + dt.timedelta(weeks=n)
        months = start.year * 12 + start.month - 1 + n
        return dt.date(months // 12, months % 12 + 1, 1)

    def next(self, start: dt.date) -> dt.date:
        return self.shift(start, 1)

    def previous(self, start: dt.date) -> dt.date:
        return self.shift(start, -1)

    def last_day(self, start: dt.date) -> dt.date:
        return self.next(start) - ONE_DAY

    def between(self, first: dt.date, last: dt.date) -> list[dt.date]:
        """Starts of the periods from `first` to `last`, both period starts, both included."""
        out, current = [], first
        while current <= last:
            out.append(current)
            current = self.next(current)
        return out

    @property
    def cron(self) -> str:
        if self.grain is Grain.daily:
            return "0 0 * * *"
        if self.grain is Grain.weekly:
            return f"0 0 * * {(self.week_start + 1) % 7}"  # cron: Sunday = 0
        return "0 0 1 * *"


def periods_for(behavior: BehaviorConfig, grain: Grain) -> Periods:
    return Periods(grain=grain, week_start=behavior.weekday_index)


def first_period(behavior: BehaviorConfig, grain: Grain) -> dt.date:
    return periods_for(behavior, grain).start_of(behavior.start_date)


def end_exclusive(behavior: BehaviorConfig, grain: Grain) -> dt.date | None:
    """Start of the first period that must not exist because it ends after `end_date`.

    The period containing end_date + 1 day is either the one right after a period ending on
    end_date, or the incomplete one that contains end_date: in both cases it is the bound.
    """
    if behavior.end_date is None:
        return None
    return periods_for(behavior, grain).start_of(behavior.end_date + ONE_DAY)


def today_in(behavior: BehaviorConfig) -> dt.date:
    return dt.datetime.now(ZoneInfo(behavior.timezone)).date()


def existing_periods(behavior: BehaviorConfig, grain: Grain, today: dt.date | None = None) -> list[dt.date]:
    """Every period of the grain that exists now (complete, within the configured dates)."""
    periods = periods_for(behavior, grain)
    bound = periods.start_of(today or today_in(behavior))  # the running period is incomplete
    end = end_exclusive(behavior, grain)
    if end is not None:
        bound = min(bound, end)
    return [p for p in periods.between(first_period(behavior, grain), periods.previous(bound))]
