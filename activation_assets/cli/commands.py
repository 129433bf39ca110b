"""`activation`: the command line for scripts and for the README's first command.

    activation sample-data [--out DIR] [--users N] [--days N] [--seed N] [--force]
    activation validate    [--config PATH]
    activation materialize [--config PATH] [--behavior B ...] [--grain G ...] [--from DATE] [--to DATE] [--no-dbt]
    activation status      [--config PATH] [--behavior B ...] [--grain G ...]
    activation check       [--config PATH] [--behavior B ...] [--grain G ...] [--from DATE] [--to DATE]
    activation report      [--config PATH] [--behavior B ...] [--grain G ...] [--out DIR] [--png DIR]
    activation ui          [--config PATH] [--port N]

`materialize` runs the selected part of the graph in dependency order through Dagster (recorded in
the project-local instance, so the UI shows every materialization and check). Without --from/--to it
does what is missing or outdated (fact days whose source rows changed, and every later partition);
with them it recomputes that window. When behaviors read dbt models, it runs `dbt build` first.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from activation_assets.config import (
    SAMPLE_DATA_DIR, ActivationConfig, BehaviorConfig, ConfigError, Grain, is_url, load_config, missing_source_files,
)

INSTANCE_TEMPLATE = Path(__file__).parent.parent / "instance" / "dagster.yaml"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


class CommandError(Exception):
    pass


def say(message: str = "") -> None:
    print(message, flush=True)


# --- the Dagster instance ------------------------------------------------------------------------


def dagster_instance(config: ActivationConfig):
    """The project's Dagster instance, its storage created by one process at a time.

    Dagster creates its SQLite tables on first use without a lock: two commands started together
    on a fresh DAGSTER_HOME (two behaviors from cron) would both create them, one failing with
    `table runs already exists`, and could leave the schema with two migration heads.
    """
    import dagster as dg
    from filelock import FileLock

    home = ensure_dagster_home(config)
    with FileLock(str(home / ".activation-storage.lock")):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # run storage
        instance.get_latest_materialization_event(dg.AssetKey("_"))  # event log storage
        instance.all_instigator_state()  # schedule storage
    return home, instance


def _refuse_beside_running_spark(config: ActivationConfig, instance) -> None:
    """A Spark warehouse at a URL has no lock file that this command and a UI run could share, and
    this command's in-process run is outside the instance's pool: refuse while a run is going on."""
    spark = config.warehouse.spark
    if spark is None or (spark.warehouse_dir and not is_url(spark.warehouse_dir)):
        return  # DuckDB's file lock, or the local Spark warehouse's lock, serialises the writers
    import dagster as dg

    running = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]), limit=5)
    if running:
        raise CommandError(
            f"{len(running)} Dagster run(s) of this instance are in progress (e.g. {running[0].run_id}); two writers"
            " on one Spark warehouse would race. Wait for them to finish (see the UI's Runs page), then run again.")


def ensure_dagster_home(config: ActivationConfig) -> Path:
    """A project-local instance next to the config, unless DAGSTER_HOME is set (which wins).
    One per engine: the Spark graph has the same asset keys, not the same history."""
    explicit = os.environ.get("DAGSTER_HOME")
    name = ".dagster_home" if config.engine == "duckdb" else f".dagster_home-{config.engine}"
    home = Path(explicit) if explicit else config.base_dir / name
    home.mkdir(parents=True, exist_ok=True)
    if not explicit and not (home / "dagster.yaml").exists():
        shutil.copy(INSTANCE_TEMPLATE, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


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
    rebuilt_from: dict[tuple[str, Grain], dt.date] | None = None,
) -> list[Run]:
    """The runs to make, in order. `done(table)` is the set of partitions already materialized.

    Without a window: the missing and `outdated_days` fact days, and for each grain everything from
    the first period that is missing, reads a fact day written now, or was built before one of its
    inputs was written again (`rebuilt_from`). With --from/--to: the fact days of the window,
    and for each grain the periods from the one containing --from that end by --to, plus every later
    period already materialized (each builds on its predecessor, so all of them change).
    """
    from activation_assets.models import sql
    from activation_assets.tables import grain_tables
    from activation_assets.periods import existing_periods, periods_for

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
            keys = grain_tables(behavior.name, grain)
            materialized = set.union(*(done(k) for k in keys))
            if windowed:
                first = calendar.start_of(start) if start else periods[0] if periods else None
                todo = [p for p in periods if first is not None and p >= first
                        and (end is None or calendar.last_day(p) <= end or p in materialized)]
            else:
                touched = {calendar.start_of(d) for d in fact_days}
                rebuilt = (rebuilt_from or {}).get((behavior.name, grain))
                stale = [p for p in periods if p in touched or any(p not in done(k) for k in keys)
                         or (rebuilt is not None and p >= rebuilt)]
                todo = [p for p in periods if stale and p >= stale[0]]
            if todo:
                runs.append(Run(behavior, f"{behavior.name} {grain.value}", keys, todo))
    return runs


# --- running -------------------------------------------------------------------------------------


class _ProgressHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say(f"      {record.getMessage()}")


def _materialized(instance, config: ActivationConfig):
    """Partitions materialized according to both Dagster and the warehouse's own log."""
    import dagster as dg

    from activation_assets.engines import open_warehouse

    logged: dict[str, set[dt.date]] = {}
    with open_warehouse(config, read_only=True) as warehouse:
        for table, day in warehouse.all_recorded() if warehouse else []:
            logged.setdefault(table, set()).add(day)
    cache: dict[str, set[dt.date]] = {}

    def done(table: str) -> set[dt.date]:
        if table not in cache:
            in_dagster = {dt.date.fromisoformat(k) for k in instance.get_materialized_partitions(dg.AssetKey(table))}
            cache[table] = in_dagster & logged.get(table, set())
        return cache[table]

    return done


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            message = error.message.strip()
            return message.removeprefix("dagster._core.definitions.events.Failure: ")
    return "the run failed (see the run's logs in the UI)"


def execute(config: ActivationConfig, runs: list[Run], instance=None) -> int:
    """Make the runs in order; returns the number of failed checks, raises CommandError on a failed run."""
    import dagster as dg

    from activation_assets.orchestration.definitions import build_definitions

    defs = build_definitions(config, check_files=False)
    assets = [*(defs.assets or []), *(defs.asset_checks or [])]  # a fact's run also checks its source days
    resources = dict(defs.resources or {})
    instance = instance or dg.DagsterInstance.get()
    failed_checks = 0
    handler = _ProgressHandler()
    progress = logging.getLogger("activation_assets.progress")
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        with _one_planned_event_per_asset():
            failed_checks = _execute(config, runs, instance, assets, resources)
    finally:
        progress.removeHandler(handler)
    return failed_checks


@contextlib.contextmanager
def _one_planned_event_per_asset():
    """Dagster's own switch: a range run records one "planned" event per asset instead of one per
    partition, half of its bookkeeping per asset partition (about 10 ms each on this disk). The
    price: in the UI, the partitions of a failed run of this command show as missing rather than
    failed; the command says which run failed and why, and `activation status` lists them. Only
    this command's runs are affected (the variable is restored); set it to 0 to keep Dagster's way."""
    name = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
    before = os.environ.get(name)
    os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)


def _execute(config: ActivationConfig, runs: list[Run], instance, assets, resources) -> int:
    import dagster as dg

    failed_checks = 0
    for number, run in enumerate(runs, 1):
        first, last = run.periods[0].isoformat(), run.periods[-1].isoformat()
        say(f"[{number}/{len(runs)}] {run.label}: {len(run.periods)} partition(s) {first}..{last}")
        began = time.monotonic()
        result = dg.materialize(
            assets,
            selection=dg.AssetSelection.assets(*run.keys) if run.checks
            else dg.AssetSelection.assets(*run.keys).without_checks(),
            instance=instance,
            resources=resources,
            tags={RANGE_START: first, RANGE_END: last},
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        if not result.success:
            raise CommandError(f"{run.label} failed: {_failure_message(result)}")
        evaluations = result.get_asset_check_evaluations()
        bad = [e for e in evaluations if not e.passed]
        # A warning (a fact day whose source changed outside a --from/--to window) is said, not fatal.
        failed_checks += sum(e.severity != dg.AssetCheckSeverity.WARN for e in bad)
        say(f"      done in {time.monotonic() - began:.1f} s; checks: {len(evaluations) - len(bad)}"
            f"/{len(evaluations)} passed")
        for evaluation in bad:
            summary = evaluation.metadata.get("summary")
            level = "WARNING" if evaluation.severity == dg.AssetCheckSeverity.WARN else "FAILED"
            say(f"      CHECK {level} {evaluation.asset_key.to_user_string()}.{evaluation.check_name}:"
                f" {summary.value if summary else ''}")
    return failed_checks


def build_dbt(config: ActivationConfig, instance) -> None:
    """`dbt build` of the config's dbt project (models and their tests) as one Dagster run, so the UI
    shows the fact models materialized upstream of the activation graph."""
    import dagster as dg

    from activation_assets.orchestration.dbt import dbt_definitions

    assets, resources = dbt_definitions(config)
    say(f"dbt build of {config.dbt.project_dir} (the fact models), as a Dagster run")
    began = time.monotonic()
    result = dg.materialize(assets, instance=instance, resources=resources, raise_on_error=False,
                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    if not result.success:
        raise CommandError(f"dbt build failed: {_failure_message(result)}. See the run in the UI or"
                           f" {config.dbt.project_dir}/target; nothing of the activation graph was run.")
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    models = len(result.get_asset_materialization_events())
    say(f"      done in {time.monotonic() - began:.1f} s: {models} model(s), dbt tests:"
        f" {len(result.get_asset_check_evaluations()) - len(failed)}/{len(result.get_asset_check_evaluations())} passed")
    for evaluation in failed:
        say(f"      dbt TEST FAILED {evaluation.asset_key.to_user_string()}.{evaluation.check_name}")


def summary(config: ActivationConfig, behaviors: list[BehaviorConfig],
            last_days: dict[str, dt.date | None] | None = None) -> None:
    from activation_assets.models import sql
    from activation_assets.periods import existing_periods
    from activation_assets.engines import open_warehouse

    with open_warehouse(config, read_only=True) as warehouse:
        if warehouse is None:
            return
        say("\nLast complete period of each grain:")
        say(f"  {'behavior':<14} {'grain':<8} {'period':<11} {'active':>8} {'new':>7} {'retained':>9}"
            f" {'reactiv.':>9} {'churned':>8} {'users':>8}")
        for behavior in behaviors:
            for grain in behavior.grains:
                table = sql.activation_table(behavior.name, grain)
                periods = existing_periods(behavior, grain)
                if not periods or not warehouse.table_exists(table):
                    continue
                row = warehouse.query_one(sql.state_counts_by_period(table, periods[-1], periods[-1]))
                n = dict(zip(("period_start", "users", *sql.STATES, "churned"), row or (None,) + (0,) * 6))
                active = n["new"] + n["retained"] + n["reactivated"]
                say(f"  {behavior.name:<14} {grain.value:<8} {periods[-1]!s:<11} {active:>8} {n['new']:>7}"
                    f" {n['retained']:>9} {n['reactivated']:>9} {n['churned']:>8} {n['users']:>8}")
        engaged = [(b, sql.engagement_table(b.name)) for b in behaviors if Grain.daily in b.grains]
        rows = [(b, warehouse.query_one(f"SELECT period_start, dau, wau, mau, dau_mau FROM {sql.ident(t)}"
                                        " ORDER BY period_start DESC LIMIT 1"))
                for b, t in engaged if warehouse.table_exists(t)]
        if any(row for _, row in rows):
            say("\nRolling engagement on the last day:")
            say(f"  {'behavior':<14} {'day':<11} {'DAU':>8} {'WAU':>8} {'MAU':>8} {'DAU/MAU':>8}")
            for behavior, row in rows:
                if row:
                    day, dau, wau, mau, ratio = row
                    say(f"  {behavior.name:<14} {day!s:<11} {dau:>8} {wau:>8} {mau:>8}"
                        f" {'' if ratio is None else f'{ratio:.1%}':>8}")
    for note in stale_sources(behaviors, last_days or {}):
        say(f"note: {note}")


# --- before Dagster starts ------------------------------------------------------------------------

# A source whose last event is this many days before the last complete day is reported: without
# end_date, every day up to yesterday gets a partition, and the later ones are empty.
STALE_SOURCE_DAYS = 7


def preflight(config: ActivationConfig, behaviors: list[BehaviorConfig], every_file: bool = False,
              ) -> dict[str, dt.date | None]:
    """Read every selected source before Dagster starts: all problems in one message, printed once,
    and nothing created (no database file, no Dagster instance). Returns, for behaviors without
    end_date, the local date of their source's last event.

    A source in Hive-style day directories is read through its newest day's files only, so that a
    daily run does not open a year of files first (`validate` reads them all: `every_file`).
    """
    from activation_assets.periods import existing_periods
    from activation_assets.pipeline.steps import check_source_columns, day_files, describe_source, source_last_day
    from activation_assets.engines import ActivationError, open_for_reading

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
            except ActivationError as exc:
                problems.append(str(exc))
    if problems:
        raise CommandError(f"{config.path}: the source of a behavior cannot be used:\n  - " + "\n  - ".join(problems))
    return last_days


def reconcile(config: ActivationConfig, behaviors: list[BehaviorConfig]) -> None:
    """Forget partitions built with settings that changed since (window, timezone, week start), so
    that planning sees them as missing and the tables end up as a fresh run would make them."""
    from activation_assets.pipeline.steps import reconcile_definition
    from activation_assets.engines import open_warehouse

    with open_warehouse(config) as warehouse:
        for behavior in behaviors:
            changed = reconcile_definition(warehouse, behavior)
            if changed:
                say(f"behavior {behavior.name!r}: {', '.join(changed)}; the partitions this changes are"
                    " built again")


@dataclass
class Findings:
    """What is outdated, per behavior: fact days whose source changed, and per grain why."""

    changes: dict[str, object]  # behavior -> changes.SourceChanges
    grains: dict[tuple[str, Grain], object]  # (behavior, grain) -> changes.Outdated

    def outdated_days(self) -> dict[str, set[dt.date]]:
        return {name: set(c.days) for name, c in self.changes.items()}

    def rebuilt_from(self) -> dict[tuple[str, Grain], dt.date]:
        return {key: min(o.rebuilt_inputs) for key, o in self.grains.items() if o.rebuilt_inputs}


def find_outdated(config: ActivationConfig, behaviors: list[BehaviorConfig], grains: list[Grain] | None = None,
                  ) -> Findings:
    """Fact days whose source rows changed since they were written (reading only what changed), and
    the partitions that are missing or were built before one of their inputs was written again."""
    from activation_assets.pipeline.changes import detect, outdated_partitions
    from activation_assets.engines import open_warehouse

    findings = Findings({}, {})
    with open_warehouse(config) as warehouse:
        for behavior in behaviors:
            changes = detect(warehouse, behavior)
            findings.changes[behavior.name] = changes
            for grain in [g for g in behavior.grains if grains is None or g in grains]:
                findings.grains[(behavior.name, grain)] = outdated_partitions(
                    warehouse, behavior, grain, changes.days)
    return findings


def say_source_changes(findings: Findings) -> None:
    for name, changes in findings.changes.items():
        if not changes.days:
            if changes.changed_files or changes.new_files or changes.removed_files or changes.days_read:
                say(f"behavior {name!r}: {changes.describe_files()}; their fact days are current"
                    f" (read {changes.read})")
            continue
        say(f"behavior {name!r}: {len(changes.days)} fact day(s) outdated, their source rows changed"
            f" ({changes.describe_files()}; read {changes.read}):")
        for line in changes.describe_days("  "):
            say(line)
    for (name, grain), outdated in findings.grains.items():
        if outdated.rebuilt_inputs:
            first = min(outdated.rebuilt_inputs)
            say(f"behavior {name!r} {grain.value}: partitions from {first} on are outdated:"
                f" {outdated.rebuilt_inputs[first]}")


def stale_sources(behaviors: list[BehaviorConfig], last_days: dict[str, dt.date | None],
                  today: dt.date | None = None) -> list[str]:
    """Behaviors without end_date whose source ended well before the last complete day."""
    from activation_assets.periods import existing_periods

    notes = []
    for behavior in behaviors:
        if behavior.name not in last_days:
            continue
        days = existing_periods(behavior, Grain.daily, today)
        last = last_days[behavior.name]
        if not days or (last is not None and (days[-1] - last).days < STALE_SOURCE_DAYS):
            continue
        empty = (days[-1] - last).days if last else len(days)
        notes.append(
            f"behavior {behavior.name!r}: its source's last event is on {last or '(none)'}, but without"
            f" `end_date` partitions are built up to {days[-1]}: the last {empty} day(s) have no events"
            f" (every user inactive). If the source has ended, set `end_date: {last}`.")
    return notes


# --- commands ------------------------------------------------------------------------------------


def _load(args) -> ActivationConfig:
    from activation_assets.orchestration.dbt import with_dbt_models

    config = with_dbt_models(load_config(args.config))
    problems = missing_source_files(config)
    if problems:
        raise ConfigError(f"{config.path}:\n  - " + "\n  - ".join(problems))
    return config


def cmd_validate(args) -> int:
    config = _load(args)
    last_days = preflight(config, list(config.behaviors), every_file=True)
    for note in stale_sources(list(config.behaviors), last_days):
        say(f"note: {note}")
    names = ", ".join(f"{b.name} ({'/'.join(g.value for g in b.grains)})" for b in config.behaviors)
    say(f"{config.path}: valid; behaviors: {names}")
    return 0


def cmd_materialize(args) -> int:
    config = _load(args)
    behaviors = [config.behavior(name) for name in args.behavior] if args.behavior else list(config.behaviors)
    grains = [Grain(g) for g in args.grain] if args.grain else None
    start = dt.date.fromisoformat(args.date_from) if args.date_from else None
    end = dt.date.fromisoformat(args.date_to) if args.date_to else None
    if start and end and end < start:
        raise CommandError(f"--to {end} is before --from {start}")
    from_dbt = [b for b in behaviors if b.source.dbt_model]
    if from_dbt and not args.no_dbt:
        # The facts are dbt models: build them first (a run of the dbt assets), then read them.
        bundled_layout = Path(config.dbt.project_dir).resolve() == (config.base_dir / "dbt_project").resolve()
        if bundled_layout and not (config.base_dir / SAMPLE_DATA_DIR).exists():
            raise CommandError("the bundled dbt project reads data/raw, which does not exist yet: generate the"
                               " sample data with `activation sample-data` first")
        home, instance = dagster_instance(config)
        _refuse_beside_running_spark(config, instance)
        build_dbt(config, instance)
    last_days = preflight(config, behaviors)
    home, instance = dagster_instance(config)
    _refuse_beside_running_spark(config, instance)
    say(f"config {config.path}; warehouse {config.warehouse.describe()}; DAGSTER_HOME {home}")
    for note in stale_sources(behaviors, last_days):
        say(f"note: {note}")
    reconcile(config, behaviors)
    findings = None
    if start is None and end is None:
        findings = find_outdated(config, behaviors, grains)
        say_source_changes(findings)
    done = _materialized(instance, config)
    runs = plan(config, behaviors, grains, start, end, done,
                outdated_days=findings.outdated_days() if findings else None,
                rebuilt_from=findings.rebuilt_from() if findings else None)
    if not runs:
        say("Nothing to do: every selected partition is materialized and current."
            " (Use --from/--to to recompute a window anyway.)")
    else:
        total = sum(len(r.periods) * len(r.keys) for r in runs)
        say(f"{len(runs)} run(s), {total} asset partition(s) to materialize")
        began = time.monotonic()
        failed = execute(config, runs, instance)
        say(f"All runs finished in {time.monotonic() - began:.1f} s.")
        if failed:
            summary(config, behaviors, last_days)
            raise CommandError(f"{failed} asset check(s) failed; see above and the checks in the UI")
    summary(config, behaviors, last_days)
    return 0


def cmd_status(args) -> int:
    """What is outdated, per behavior and grain, and why; exit 0 when everything is current."""
    config = _load(args)
    behaviors = [config.behavior(name) for name in args.behavior] if args.behavior else list(config.behaviors)
    grains = [Grain(g) for g in args.grain] if args.grain else None
    preflight(config, behaviors)
    home, instance = dagster_instance(config)
    reconcile(config, behaviors)
    findings = find_outdated(config, behaviors, grains)
    done = _materialized(instance, config)
    runs = plan(config, behaviors, grains, None, None, done, outdated_days=findings.outdated_days(),
                rebuilt_from=findings.rebuilt_from())
    from activation_assets.periods import existing_periods
    from activation_assets.models.sql import fact_table

    for behavior in behaviors:
        changes = findings.changes[behavior.name]
        fact = fact_table(behavior.name)
        missing = [d for d in existing_periods(behavior, Grain.daily) if d not in done(fact)]
        say(f"{behavior.name} (sources: {changes.describe_files()}; read {changes.read})")
        if not changes.days and not missing:
            say(f"  {fact}: current")
        if missing:
            say(f"  {fact}: {len(missing)} day(s) missing: {_span(missing)}")
        if changes.days:
            say(f"  {fact}: {len(changes.days)} day(s) outdated, their source rows changed:")
            for line in changes.describe_days("    "):
                say(line)
        for grain in [g for g in behavior.grains if grains is None or g in grains]:
            outdated = findings.grains[(behavior.name, grain)]
            todo = [r for r in runs if r.behavior is behavior and r.label.endswith(f" {grain.value}")]
            if not todo:
                say(f"  {grain.value}: current")
                continue
            periods = todo[0].periods
            why = []
            if outdated.missing:
                why.append(f"{len(outdated.missing)} missing ({_span(outdated.missing)})")
            if outdated.reads_outdated_days:
                why.append(f"{len(outdated.reads_outdated_days)} read an outdated fact day"
                           f" ({_span(outdated.reads_outdated_days)})")
            if outdated.rebuilt_inputs:
                first = min(outdated.rebuilt_inputs)
                why.append(f"{len(outdated.rebuilt_inputs)} built before an input was written again, from {first}"
                           f" ({outdated.rebuilt_inputs[first]})")
            if not why:
                why.append("they read fact days that are missing")
            say(f"  {grain.value}: {len(periods)} partition(s) to rebuild, {periods[0]}..{periods[-1]}"
                f" (each builds on the previous one): {'; '.join(why)}")
    if not runs:
        say("\nEverything is current.")
        return 0
    command = f"activation materialize --config {config.path}"
    say(f"\n{sum(len(r.periods) * len(r.keys) for r in runs)} asset partition(s) are outdated or missing."
        f" To bring them up to date: {command}")
    return 1


def _span(days: list[dt.date]) -> str:
    return f"{days[0]}" if len(days) == 1 else f"{days[0]}..{days[-1]}"


def cmd_check(args) -> int:
    """Every invariant over the materialized partitions, as `dbt test` does: exit 1 on any violation."""
    config = _load(args)
    from activation_assets.checks import invariants as inv
    from activation_assets.engines import open_warehouse

    behaviors = [config.behavior(name) for name in args.behavior] if args.behavior else list(config.behaviors)
    grains = [Grain(g) for g in args.grain] if args.grain else None
    start = dt.date.fromisoformat(args.date_from) if args.date_from else dt.date.min
    end = dt.date.fromisoformat(args.date_to) if args.date_to else dt.date.max
    began, evaluated, failed = time.monotonic(), 0, 0
    with open_warehouse(config, read_only=True) as warehouse:
        if warehouse is None:
            raise CommandError(f"the database {config.database} does not exist: nothing has been materialized yet")
        logged: dict[str, list[dt.date]] = {}
        for table, day in warehouse.all_recorded():
            logged.setdefault(table, []).append(day)
        for behavior in behaviors:
            for grain in [g for g in behavior.grains if grains is None or g in grains]:
                for table, table_checks in inv.checks_by_table(behavior.name, grain).items():
                    periods = sorted(p for p in logged.get(table, []) if start <= p <= end)
                    if not periods or not inv.checks_for(table_checks, grain):
                        continue
                    outcomes: dict[str, inv.CheckOutcome] = {}
                    inv.evaluate_range(warehouse, table_checks, behavior, grain, periods, outcomes)
                    for outcome in outcomes.values():
                        evaluated += 1
                        status = "PASS" if outcome.passed else "FAIL"
                        say(f"{status} {table}.{outcome.check.name}: {outcome.summary()}")
                        if not outcome.passed:
                            failed += 1
                            _show_failure(outcome)
    if not evaluated:
        raise CommandError("no materialized partition matches the selection: nothing to check")
    say(f"\n{evaluated} check(s) in {time.monotonic() - began:.1f} s: {evaluated - failed} passed, {failed} failed.")
    return 1 if failed else 0


def _show_failure(outcome) -> None:
    failing = [str(p) for p in outcome.failing]
    more = f" (+{len(failing) - 10} more)" if len(failing) > 10 else ""
    say(f"     failing partitions: {', '.join(failing[:10])}{more}")
    for period, (count, detail) in list(outcome.failing.items())[:3]:
        say(f"     {period}: {count} violation(s): {detail}")
    if outcome.examples:
        names = list(outcome.examples[0])
        say("     examples: " + " | ".join(names))
        for row in outcome.examples:
            say("               " + " | ".join("NULL" if row[n] is None else str(row[n]) for n in names))


def cmd_sample_data(args) -> int:
    from activation_assets.sample_data import SampleSpec, generate

    out = Path(args.out)
    if (out / "events").exists() and (out / "community_posts.csv").exists() and not args.force:
        say(f"Sample data already in {out} (use --force to generate it again).")
        return 0
    began = time.monotonic()
    given = {k: v for k, v in (("users", args.users), ("days", args.days), ("seed", args.seed)) if v is not None}
    counts = generate(out, SampleSpec(**given))
    say(f"Sample data written to {out} in {time.monotonic() - began:.1f} s: {counts['users']} users,"
        f" {counts['events']} events, {counts['posts']} posts.")
    return 0


def cmd_report(args) -> int:
    config = _load(args)
    from activation_assets.report.html import write_reports

    behaviors = [config.behavior(name) for name in args.behavior] if args.behavior else list(config.behaviors)
    grains = [Grain(g) for g in args.grain] if args.grain else None
    out = Path(args.out) if args.out else config.base_dir / "reports"
    began = time.monotonic()
    index = write_reports(config, behaviors, grains, out, Path(args.png) if args.png else None)
    say(f"Report written in {time.monotonic() - began:.1f} s: {index}")
    return 0


def cmd_ui(args) -> int:
    config = _load(args)
    home = ensure_dagster_home(config)
    os.environ["ACTIVATION_CONFIG"] = str(config.path)
    workspace = home / "workspace.yaml"  # the code location `workspace.yaml` of the repository names too
    workspace.write_text("load_from:\n  - python_module:\n      module_name: activation_assets.definitions\n"
                         "      location_name: activation_assets\n")
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(workspace), "-p", str(args.port)]
    say(f"DAGSTER_HOME={home} {' '.join(command)}")
    os.execv(command[0], command)
    return 0  # not reached


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="activation", description="The user activation layer, as Dagster assets.")
    commands = top.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="activation config (default: $ACTIVATION_CONFIG or ./activation.yaml)")
        return p

    m = with_config(commands.add_parser("materialize", help="materialize the graph (what is missing, in order)"))
    m.add_argument("--behavior", action="append", help="only this behavior (repeatable)")
    m.add_argument("--grain", action="append", choices=[g.value for g in Grain], help="only this grain (repeatable)")
    m.add_argument("--from", dest="date_from", help="first day (YYYY-MM-DD) of a window to recompute")
    m.add_argument("--to", dest="date_to", help="last day (YYYY-MM-DD) of a window to recompute")
    m.add_argument("--no-dbt", action="store_true",
                   help="do not run `dbt build` first for behaviors whose source is a dbt model")
    m.set_defaults(handler=cmd_materialize)

    st = with_config(commands.add_parser(
        "status", help="what is outdated or missing, and why (exit 0 when everything is current)"))
    st.add_argument("--behavior", action="append", help="only this behavior (repeatable)")
    st.add_argument("--grain", action="append", choices=[g.value for g in Grain], help="only this grain (repeatable)")
    st.set_defaults(handler=cmd_status)

    c = with_config(commands.add_parser(
        "check", help="re-run every invariant over the materialized partitions (exit 1 on any violation)"))
    c.add_argument("--behavior", action="append", help="only this behavior (repeatable)")
    c.add_argument("--grain", action="append", choices=[g.value for g in Grain], help="only this grain (repeatable)")
    c.add_argument("--from", dest="date_from", help="first partition (YYYY-MM-DD) to check")
    c.add_argument("--to", dest="date_to", help="last partition (YYYY-MM-DD) to check")
    c.set_defaults(handler=cmd_check)

    v = with_config(commands.add_parser("validate", help="check the config and its sources"))
    v.set_defaults(handler=cmd_validate)

    s = commands.add_parser("sample-data", help="generate the bundled sample marketplace data")
    s.add_argument("--out", default=str(SAMPLE_DATA_DIR), help=f"default {SAMPLE_DATA_DIR} (where the bundled config reads)")
    s.add_argument("--users", type=int, help="default 30,000")  # defaults: sample_data.SampleSpec
    s.add_argument("--days", type=int, help="default 90 (2025-01-01..03-31, the bundled config's window)")
    s.add_argument("--seed", type=int)
    s.add_argument("--force", action="store_true", help="regenerate even if present")
    s.set_defaults(handler=cmd_sample_data)

    r = with_config(commands.add_parser("report", help="write the HTML growth-accounting report"))
    r.add_argument("--behavior", action="append", help="only this behavior (repeatable)")
    r.add_argument("--grain", action="append", choices=[g.value for g in Grain], help="only this grain (repeatable)")
    r.add_argument("--out", help="output folder (default: reports/ next to the config)")
    r.add_argument("--png", help="also save each chart as a PNG in this folder")
    r.set_defaults(handler=cmd_report)

    u = with_config(commands.add_parser("ui", help="open the Dagster UI (dagster dev) on the project instance"))
    u.add_argument("--port", type=int, default=3000)
    u.set_defaults(handler=cmd_ui)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # ActivationError and friends: a message, not a trace
        from activation_assets.engines.base import ActivationError

        if isinstance(exc, ActivationError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
