"""The commands of `activation`, one function each (the parser in `parser.py` calls them).

    activation sample-data [--out DIR] [--users N] [--days N] [--seed N] [--force]
    activation validate    [--config PATH]
    activation materialize [--config PATH] [--behavior B ...] [--grain G ...] [--from DATE] [--to DATE] [--no-dbt]
    activation status      [--config PATH] [--behavior B ...] [--grain G ...]
    activation check       [--config PATH] [--behavior B ...] [--grain G ...] [--from DATE] [--to DATE]
    activation report      [--config PATH] [--behavior B ...] [--grain G ...] [--out DIR] [--png DIR]
    activation ui          [--config PATH] [--port N]
    activation serve       [--socket PATH]   (cli.main runs it: it serves `main` itself)

`materialize` runs the selected part of the graph in dependency order through Dagster (recorded in
the project-local instance, so the UI shows every materialization and check). Without --from/--to it
does what is missing or outdated (fact days whose source rows changed, and every later partition);
with them it recomputes that window. When behaviors read dbt models, it runs `dbt build` first.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

from activation_assets.checks import invariants as inv
from activation_assets.cli.output import (
    CommandError, describe_segment_values, show_failure, span, say, say_source_changes, stale_sources, summary,
)
from activation_assets.cli.preflight import preflight, reconcile
from activation_assets.config import SAMPLE_DATA_DIR, ActivationConfig, ConfigError, Grain, load_config, missing_source_files
from activation_assets.engines import open_warehouse
from activation_assets.models.sql import fact_table
from activation_assets import tables
from activation_assets.tables import FORECAST_JOB
from activation_assets.orchestration.dbt import with_dbt_models
from activation_assets.periods import existing_periods
from activation_assets.pipeline.plan import find_outdated, plan


# --- commands ------------------------------------------------------------------------------------

# The runner imports Dagster (1-2 s): only the commands that start runs or the UI load it.


def _load(args) -> ActivationConfig:
    config = with_dbt_models(load_config(args.config))
    tables.check_segment_names(config.behaviors)
    problems = missing_source_files(config)
    if problems:
        raise ConfigError(f"{config.path}:\n  - " + "\n  - ".join(problems))
    return config


def cmd_validate(args) -> int:
    config = _load(args)
    values: dict[str, dict] = {}
    last_days = preflight(config, list(config.behaviors), every_file=True, values=values)
    for note in stale_sources(list(config.behaviors), last_days):
        say(f"note: {note}")
    for behavior in config.behaviors:
        for segment in behavior.segments:
            say(describe_segment_values(behavior.name, segment, values[behavior.name][segment.key]))
    names = ", ".join(f"{b.name} ({'/'.join(g.value for g in b.grains)})" for b in config.behaviors)
    say(f"{config.path}: valid; behaviors: {names}")
    return 0


def cmd_materialize(args) -> int:
    from activation_assets.cli import runner

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
        home, instance = runner.dagster_instance(config)
        runner.refuse_beside_running_spark(config, instance)
        runner.build_dbt(config, instance)
    last_days = preflight(config, behaviors)
    home, instance = runner.dagster_instance(config)
    runner.refuse_beside_running_spark(config, instance)
    say(f"config {config.path}; warehouse {config.warehouse.describe()}; DAGSTER_HOME {home}")
    for note in stale_sources(behaviors, last_days):
        say(f"note: {note}")
    runner.wait_for_in_flight(instance, set(tables.behavior_tables(behaviors)))
    reconcile(config, behaviors)
    findings = None
    if start is None and end is None:
        findings = find_outdated(config, behaviors, grains)
        say_source_changes(findings)
    done = runner.materialized_partitions(instance, config)
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
        failed = runner.execute(config, runs, instance)
        say(f"All runs finished in {time.monotonic() - began:.1f} s.")
        if failed:
            summary(config, behaviors, last_days)
            raise CommandError(f"{failed} asset check(s) failed; see above and the checks in the UI")
    if config.dbt is not None and not args.no_dbt:
        runner.build_dbt(config, instance, downstream=True)  # the models that read the layer, after it
    summary(config, behaviors, last_days)
    return 0


def cmd_status(args) -> int:
    from activation_assets.cli import runner

    """What is outdated, per behavior and grain, and why; exit 0 when everything is current."""
    config = _load(args)
    behaviors = [config.behavior(name) for name in args.behavior] if args.behavior else list(config.behaviors)
    grains = [Grain(g) for g in args.grain] if args.grain else None
    preflight(config, behaviors)
    home, instance = runner.dagster_instance(config)
    reconcile(config, behaviors)
    findings = find_outdated(config, behaviors, grains)
    done = runner.materialized_partitions(instance, config)
    runs = plan(config, behaviors, grains, None, None, done, outdated_days=findings.outdated_days(),
                rebuilt_from=findings.rebuilt_from())

    for behavior in behaviors:
        changes = findings.changes[behavior.name]
        fact = fact_table(behavior.name)
        missing = [d for d in existing_periods(behavior, Grain.daily) if d not in done(fact)]
        say(f"{behavior.name} (sources: {changes.describe_files()}; read {changes.read})")
        if not changes.days and not missing:
            say(f"  {fact}: current")
        if missing:
            say(f"  {fact}: {len(missing)} day(s) missing: {span(missing)}")
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
                why.append(f"{len(outdated.missing)} missing ({span(outdated.missing)})")
            if outdated.reads_outdated_days:
                why.append(f"{len(outdated.reads_outdated_days)} read an outdated fact day"
                           f" ({span(outdated.reads_outdated_days)})")
            if outdated.rebuilt_inputs:
                first = outdated.first_rebuilt
                why.append(f"{len(outdated.rebuilt_inputs)} built before an input was written again, from {first}"
                           f" ({outdated.rebuilt_inputs[first]})")
            if not why:
                why.append("they read fact days that are missing")
            say(f"  {grain.value}: {len(periods)} partition(s) to rebuild, {periods[0]}..{periods[-1]}"
                f" (each builds on the previous one): {'; '.join(why)}")
        forecasts = [r for r in runs if r.behavior is behavior and r.grain == FORECAST_JOB]
        if behavior.growth_model and (grains is None or Grain.daily in grains):
            outdated = findings.grains[(behavior.name, FORECAST_JOB)]
            if not forecasts:
                say("  forecast: current")
            else:
                days, why = forecasts[0].periods, []
                if outdated.missing:
                    why.append(f"{len(outdated.missing)} missing ({span(outdated.missing)})")
                if outdated.rebuilt_inputs:
                    first = outdated.first_rebuilt
                    why.append(f"written before what they read, from {first} ({outdated.rebuilt_inputs[first]})")
                say(f"  forecast: {len(days)} day(s) to rebuild, {days[0]}..{days[-1]}:"
                    f" {'; '.join(why) or 'they read daily partitions to rebuild'}")
    if not runs:
        say("\nEverything is current.")
        return 0
    command = f"activation materialize --config {config.path}"
    say(f"\n{sum(len(r.periods) * len(r.keys) for r in runs)} asset partition(s) are outdated or missing."
        f" To bring them up to date: {command}")
    return 1


def cmd_check(args) -> int:
    """Every invariant over the materialized partitions, as `dbt test` does: exit 1 on any violation."""
    config = _load(args)
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
                for table, table_checks in inv.checks_by_table(behavior, grain).items():
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
                            show_failure(outcome)
    if not evaluated:
        raise CommandError("no materialized partition matches the selection: nothing to check")
    say(f"\n{evaluated} check(s) in {time.monotonic() - began:.1f} s: {evaluated - failed} passed, {failed} failed.")
    return 1 if failed else 0


def cmd_sample_data(args) -> int:
    from activation_assets.sample_data import SampleSpec, generate  # numpy and pandas: only for this command


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
    from activation_assets.report.html import write_reports  # matplotlib: only for this command

    config = _load(args)
    behaviors = [config.behavior(name) for name in args.behavior] if args.behavior else list(config.behaviors)
    grains = [Grain(g) for g in args.grain] if args.grain else None
    out = Path(args.out) if args.out else config.base_dir / "reports"
    began = time.monotonic()
    index, written = write_reports(config, behaviors, grains, out, Path(args.png) if args.png else None)
    if written:
        say(f"Report written in {time.monotonic() - began:.1f} s: {index}")
    else:
        say(f"Report unchanged: nothing it is made of was written since {index} was ({time.monotonic() - began:.1f} s)")
    return 0


def cmd_dbt_sources(args) -> int:
    from activation_assets.orchestration.dbt import layer_sources_yaml

    text = layer_sources_yaml(_load(args))
    if args.out:
        Path(args.out).write_text(text)
        say(f"dbt sources of the layer written to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_ui(args) -> int:
    from activation_assets.cli import runner

    config = _load(args)
    home = runner.ensure_dagster_home(config)
    os.environ["ACTIVATION_CONFIG"] = str(config.path)
    workspace = home / "workspace.yaml"  # the code location `workspace.yaml` of the repository names too
    workspace.write_text("load_from:\n  - python_module:\n      module_name: activation_assets.definitions\n"
                         "      location_name: activation_assets\n")
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(workspace), "-p", str(args.port)]
    say(f"DAGSTER_HOME={home} {' '.join(command)}")
    os.execv(command[0], command)
    return 0  # not reached

