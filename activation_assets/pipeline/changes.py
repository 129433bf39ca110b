"""Which fact days and partitions are outdated, found without being told where (no Dagster here).

A fact day is outdated when the source rows of that local day differ from the rows it was written
from: each fact day is logged with the fingerprint of its source rows (count and an
order-independent hash, computed in the scan that wrote it). Finding the days to fingerprint again
must not read the history:

- a local file source (a path or glob) keeps a record of its files (size, modification time, the
  local days each held). A file whose size and time are unchanged is not read; a new, changed or
  removed file makes the days it held, before and now, candidates. Only those days are read again
  (through the time bound, or only their Hive-style day directories) and fingerprinted;
- a table or a URL has no file dates to compare: every fact day is fingerprinted in one grouped
  pass over the source.

A partition is also outdated when something it was built from was written after it (its fact days,
its own previous partition, the FirstLast or activation partition it reads): the partition log
records when each partition was written. Dagster's staleness marks one hop only, so it cannot be
the mechanism.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from activation_assets import tables as relations
from activation_assets.models import sql
from activation_assets.config import BehaviorConfig, Grain, is_url
from activation_assets.periods import existing_periods, first_period, periods_for
from activation_assets.pipeline.steps import (
    EMPTY_DAY, HIVE_DAY, check_source_columns, day_files, describe_source, fact_days,
)
from activation_assets.engines import ActivationError, Warehouse, as_warehouse

FileEntry = tuple[int, int, dt.date | None, dt.date | None]  # size, mtime_ns, first day, last day
CHANGE_STAGE = "change_stage"


@dataclass
class DayChange:
    """How one fact day's source changed: source rows then and now, fact rows added and removed."""

    day: dt.date
    rows_before: int | None
    rows_now: int
    added: int | None = None
    removed: int | None = None

    def describe(self) -> str:
        before = "?" if self.rows_before is None else self.rows_before
        effect = "" if self.added is None else f"; fact rows +{self.added} -{self.removed}"
        return f"{self.day}: source rows {before} -> {self.rows_now}{effect}"


@dataclass
class SourceChanges:
    behavior: str
    days: dict[dt.date, DayChange] = field(default_factory=dict)
    new_files: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    days_read: int = 0  # fact days fingerprinted again
    read: str = "nothing"  # what finding them read

    @property
    def outdated(self) -> list[dt.date]:
        return sorted(self.days)

    def describe_days(self, indent: str, limit: int = 10) -> list[str]:
        """One line per outdated day (the first `limit`), then how many more."""
        lines = [f"{indent}{change.describe()}" for change in list(self.days.values())[:limit]]
        if len(self.days) > limit:
            lines.append(f"{indent}... and {len(self.days) - limit} more up to {self.outdated[-1]}")
        return lines

    def describe_files(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in (
            ("new", self.new_files), ("changed", self.changed_files), ("removed", self.removed_files)) if v]
        return ", ".join(parts) + " file(s)" if parts else "no file changed"


# --- the files of a source -------------------------------------------------------------------------


def local_files(behavior: BehaviorConfig) -> dict[str, tuple[int, int]] | None:
    """path -> (size, mtime_ns) of a local file source; None for a table or a URL."""
    source = behavior.source
    if source.kind == "table" or is_url(source.location):
        return None
    states = {}
    for path in sorted(glob.glob(source.location, recursive=True)):
        stat = os.stat(path)
        states[path] = (stat.st_size, stat.st_mtime_ns)
    return states


def file_days(wh: Warehouse, behavior: BehaviorConfig, path: str, time_type: str) -> tuple[dt.date | None, dt.date | None]:
    """The local days a file can hold rows of: from its Hive-style day key (a day either side, as
    the key may be a UTC day), else from its time column (one column of one file)."""
    keys = HIVE_DAY.findall(os.path.dirname(path))
    if keys:
        day = dt.date.fromisoformat(keys[-1])
        return day - dt.timedelta(days=1), day + dt.timedelta(days=1)
    relation = wh.source_relation(behavior, [path])
    local = sql.local_date_expr(sql.instant_expr(behavior.time_column, time_type), behavior.timezone)
    first, last = wh.query_one(f"SELECT min({local}), max({local}) FROM {relation}")
    return first, last


def _days_between(first: dt.date | None, last: dt.date | None) -> set[dt.date]:
    if first is None or last is None:
        return set()
    return {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}


def _contiguous(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    groups: list[list[dt.date]] = []
    for day in sorted(days):
        if groups and groups[-1][1] + dt.timedelta(days=1) == day:
            groups[-1][1] = day
        else:
            groups.append([day, day])
    return [(a, b) for a, b in groups]


# --- fact days -------------------------------------------------------------------------------------


def detect(conn: Warehouse, behavior: BehaviorConfig, record: bool = True) -> SourceChanges:
    """The fact days of `behavior` whose source rows changed since they were written.

    With `record`, files found changed whose days all match their fingerprints again (the fact was
    rewritten since) are recorded as seen, so the next run does not read them.
    """
    wh = as_warehouse(conn)
    fact = sql.fact_table(behavior.name)
    recorded = wh.recorded_fingerprints(fact)
    changes = SourceChanges(behavior.name)
    if not recorded:
        return changes  # nothing written yet: every day is missing, not outdated
    states = local_files(behavior)
    time_type: str | None = None

    def source_time_type() -> str:
        nonlocal time_type
        if time_type is None:
            _, columns = describe_source(wh, behavior, list(states)[-1:] if states else None)
            time_type = check_source_columns(behavior, columns)
        return time_type

    candidates: set[dt.date] = set()
    days_of_file: dict[str, set[dt.date]] = {}
    seen: dict[str, FileEntry] = {}
    if states is None:
        candidates = set(recorded)
        changes.read = f"the whole source ({behavior.source.describe()}: no file dates to compare)"
    else:
        known = wh.source_files(behavior.name)
        written = {day: at for _, day, at in wh.log_entries([fact])}
        for path, (size, mtime) in states.items():
            if path in known and known[path][:2] == (size, mtime):
                continue
            first, last = file_days(wh, behavior, path, source_time_type())
            seen[path] = (size, mtime, first, last)
            days = _days_between(first, last)
            if path in known:
                changes.changed_files.append(path)
                days |= _days_between(*known[path][2:])
            elif not known:
                # No record yet (the first look after the first run, or a database from before the
                # record existed): a file is new to the record, not to the data. It is a candidate only
                # if it was modified after one of the fact days it holds was written.
                written_days = [written[d] for d in days if written.get(d) is not None]
                modified = dt.datetime.fromtimestamp(mtime / 1e9, dt.timezone.utc).replace(tzinfo=None)
                if written_days and modified >= min(written_days):
                    changes.changed_files.append(path)
                else:
                    days = set()
            else:
                changes.new_files.append(path)
            days_of_file[path] = days
            candidates |= days
        for path in sorted(set(known) - set(states)):
            changes.removed_files.append(path)
            days_of_file[path] = _days_between(*known[path][2:])
            candidates |= days_of_file[path]
    candidates &= set(recorded)

    if candidates:
        changes.days_read = len(candidates)
        if states is not None:
            changes.read = f"{len(candidates)} fact day(s) of {changes.describe_files()}"
        for day, change in _fingerprint_and_compare(wh, behavior, sorted(candidates), recorded, source_time_type()):
            changes.days[day] = change
    if record and states is not None:
        settled = {p: e for p, e in seen.items() if not days_of_file.get(p, set()) & set(changes.days)}
        gone = [p for p in changes.removed_files if not days_of_file[p] & set(changes.days)]
        if settled or gone:
            wh.update_source_files(behavior.name, settled, gone)
    return changes


def _fingerprint_and_compare(
    wh: Warehouse, behavior: BehaviorConfig, days: list[dt.date],
    recorded: dict[dt.date, tuple[int | None, int | None]], time_type: str,
) -> Iterable[tuple[dt.date, DayChange]]:
    fact = sql.fact_table(behavior.name)
    fact_columns = list(wh.table_column_types(fact)) if wh.table_exists(fact) else []
    bounded = sql.time_bound(behavior.time_column, time_type, days[0], days[-1]) is not None
    # A text time column cannot be bounded: read the source once for every candidate day.
    for first, last in _contiguous(days) if bounded else [(days[0], days[-1])]:
        files = day_files(behavior, first, last)
        relation, columns = describe_source(wh, behavior, files)
        others = [c for c in columns if c not in (behavior.user_column, behavior.time_column)]
        try:
            wh.stage(CHANGE_STAGE, sql.stage_select(
                relation, behavior.user_column, behavior.time_column, others, time_type, behavior.timezone,
                first, last))
        except wh.errors as exc:
            raise ActivationError(
                f"behavior {behavior.name!r}: reading {first}..{last} from its source ({behavior.source.describe()})"
                f" to find changed days failed: {wh.message(exc)}. Fix the source data and run again.") from None
        now = {row[0]: (row[1], row[3]) for row in wh.query(sql.stage_day_counts(first, last, others, CHANGE_STAGE))}
        changed = [d for d in days if first <= d <= last and now.get(d, EMPTY_DAY) != recorded[d]]
        # Fact rows added and removed, when the source still has the fact's columns (else the
        # fact step refuses the source and says why).
        comparable = bool(changed) and sorted(fact_columns) == sorted(wh.column_types(CHANGE_STAGE))
        diff = {row[0]: (row[1], row[2]) for row in wh.query(
            sql.fact_difference(fact, CHANGE_STAGE, fact_columns, changed))} if comparable else {}
        wh.drop_stage(CHANGE_STAGE)
        for day in changed:
            added, removed = diff.get(day, (0, 0)) if comparable else (None, None)
            yield day, DayChange(day, recorded[day][0], now.get(day, EMPTY_DAY)[0], added, removed)


# --- partitions built on something rewritten since ---------------------------------------------------


@dataclass
class Outdated:
    """Why the partitions of one grain are outdated (where a run must start is `plan.rebuild_from`'s to say)."""

    grain: Grain
    missing: list[dt.date] = field(default_factory=list)
    reads_outdated_days: list[dt.date] = field(default_factory=list)
    rebuilt_inputs: dict[dt.date, str] = field(default_factory=dict)  # period -> what was rewritten after it

    @property
    def first_rebuilt(self) -> dt.date | None:
        """The first partition built before one of its inputs was written again."""
        return min(self.rebuilt_inputs) if self.rebuilt_inputs else None


def outdated_partitions(
    conn: Warehouse, behavior: BehaviorConfig, grain: Grain, outdated_days: Iterable[dt.date] = (),
    today: dt.date | None = None,
) -> Outdated:
    """The partitions of one grain that are missing, read a fact day whose source changed, or were
    built before one of their inputs was written again. Every later partition builds on them."""
    wh = as_warehouse(conn)
    tables = sql.grain_tables(behavior, grain)
    fact, (firstlast, activation) = sql.fact_table(behavior.name), tables[:2]
    written: dict[str, dict[dt.date, dt.datetime]] = {}
    for table, period, at in wh.log_entries([fact, *tables]):
        written.setdefault(table, {})[period] = at
    calendar = periods_for(behavior, grain)
    result = Outdated(grain)
    outdated_days = set(outdated_days)
    first = first_period(behavior, grain)

    def later(table: str, period: dt.date, inputs: Iterable[tuple[str, dt.date]]) -> str | None:
        at = written.get(table, {}).get(period)
        for source, day in inputs:
            input_at = written.get(source, {}).get(day)
            if at is not None and input_at is not None and input_at > at:
                return f"{source} {day} was written after {table} {period}"
        return None

    for period in existing_periods(behavior, grain, today):
        if any(period not in written.get(t, {}) for t in tables):
            result.missing.append(period)
        days = fact_days(behavior, grain, period)
        if outdated_days.intersection(days):
            result.reads_outdated_days.append(period)
        previous = [] if period == first else [calendar.previous(period)]
        reason = (later(firstlast, period, [(fact, d) for d in days] + [(firstlast, p) for p in previous])
                  or later(activation, period, [(firstlast, period)] + [(activation, p) for p in previous])
                  or next((r for t in tables[2:]
                           if (r := later(t, period, [(sql.reads(behavior.name, grain, t), period)]))), None))
        if reason:
            result.rebuilt_inputs[period] = reason
    return result


def outdated_forecasts(conn: Warehouse, behavior: BehaviorConfig, today: dt.date | None = None) -> Outdated:
    """The growth model's days that are missing or were written before what they read was written
    again: the engagement tables of the window's days, for the forecast and its rates; the forecasts
    made 1, 7 and 28 days before and the day's engagement, for the accuracy."""
    wh = as_warehouse(conn)
    result = Outdated(Grain.daily)
    if behavior.growth_model is None:
        return result
    forecast, rates, accuracy = tables = sql.forecast_tables(behavior.name)
    engagement = sql.engagement_tables(behavior.name)[:2]
    written: dict[str, dict[dt.date, dt.datetime]] = {}
    for table, period, at in wh.log_entries([*tables, *engagement]):
        written.setdefault(table, {})[period] = at
    window = behavior.growth_model.window_days
    for day in existing_periods(behavior, Grain.daily, today):
        if day < behavior.forecast_start:
            continue
        if any(day not in written.get(t, {}) for t in tables):
            result.missing.append(day)
        reads = {forecast: [(e, day - dt.timedelta(days=i)) for e in engagement for i in range(window)],
                 rates: [(e, day - dt.timedelta(days=i)) for e in engagement for i in range(window)],
                 accuracy: [(engagement[1], day)] + [(forecast, day - dt.timedelta(days=h))
                                                     for h in relations.ACCURACY_HORIZONS]}
        for table, inputs in reads.items():
            at = written.get(table, {}).get(day)
            later = next((f"{source} {d} was written after {table} {day}" for source, d in inputs
                          if at is not None and written.get(source, {}).get(d, at) > at), None)
            if later:
                result.rebuilt_inputs[day] = later
                break
    return result
