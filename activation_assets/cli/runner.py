"""How the CLI runs the graph: the project-local Dagster instance, and the planned runs made through
`dagster.materialize` in order (so the UI shows every materialization and check)."""

from __future__ import annotations

import contextlib
import hashlib
import datetime as dt
import logging
import os
import shutil
import time
from pathlib import Path

from filelock import FileLock

from activation_assets.config import ActivationConfig, is_url
from activation_assets.engines import open_warehouse
from activation_assets.orchestration.dbt import dbt_definitions
from activation_assets.orchestration.definitions import build_defs
from activation_assets.orchestration.jobs import RANGE_END, RANGE_START
from activation_assets.pipeline.plan import Run
from activation_assets.tables import behavior_tables
from activation_assets.cli.output import CommandError, say
from activation_assets.cli.process import resume_collection

INSTANCE_TEMPLATE = Path(__file__).parent.parent / "instance" / "dagster.yaml"


# --- the Dagster instance ------------------------------------------------------------------------


def dagster_instance(config: ActivationConfig):
    """The project's Dagster instance, its storage created by one process at a time.

    Dagster creates its SQLite tables on first use without a lock: two commands started together
    on a fresh DAGSTER_HOME (two behaviors from cron) would both create them, one failing with
    `table runs already exists`, and could leave the schema with two migration heads.
    """
    import dagster as dg

    home = ensure_dagster_home(config)
    with FileLock(str(home / ".activation-storage.lock")):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # run storage
        instance.get_latest_materialization_event(dg.AssetKey("_"))  # event log storage
        instance.all_instigator_state()  # schedule storage
    return home, instance


def refuse_beside_running_spark(config: ActivationConfig, instance) -> None:
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


IN_FLIGHT_POLL_SECONDS = 5.0


def in_flight(instance, keys: set[str]) -> list[str]:
    """The runs and backfills of the instance in progress (queued included) that write any of `keys`,
    described for a person."""
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus

    found = []
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]))
    for run in runs:
        touched = {k.to_user_string() for k in run.asset_selection or ()} & keys
        if touched:
            span = [run.tags.get(RANGE_START), run.tags.get(RANGE_END)]
            partitions = f" {span[0]}..{span[1]}" if all(span) else (
                f" {run.tags['dagster/partition']}" if "dagster/partition" in run.tags else "")
            found.append(f"run {run.run_id[:8]} ({run.job_name}{partitions}, {run.status.value.lower()})")
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        touched = {k.to_user_string() for k in backfill.asset_selection or ()} & keys
        if touched:
            found.append(f"backfill {backfill.backfill_id} ({len(touched)} of its assets are this command's)")
    return found


def wait_for_in_flight(instance, keys: set[str], poll_seconds: float = IN_FLIGHT_POLL_SECONDS) -> None:
    """Wait, saying so, while runs or backfills of the instance (a UI backfill, a sensor's run) write
    what this command would: it plans only after they finish, so it never does their work twice."""
    said: list[str] = []
    while True:
        busy = in_flight(instance, keys)
        if not busy:
            return
        if busy != said:
            say(f"waiting for {len(busy)} run(s) or backfill(s) of this instance that write these assets to"
                f" finish: {'; '.join(busy[:5])}{' ...' if len(busy) > 5 else ''} (Ctrl-C to stop waiting)")
            said = busy
        time.sleep(poll_seconds)


def ensure_dagster_home(config: ActivationConfig) -> Path:
    """A project-local instance next to the config, unless DAGSTER_HOME is set (which wins).
    One per engine: the Spark graph has the same asset keys, not the same history."""
    explicit = os.environ.get("DAGSTER_HOME")
    name = ".dagster_home" if config.engine == "duckdb" else f".dagster_home-{config.engine}"
    home = Path(explicit) if explicit else config.base_dir / name
    home.mkdir(parents=True, exist_ok=True)
    if not explicit and not (home / "dagster.yaml").exists():
        shutil.copy(INSTANCE_TEMPLATE, home / "dagster.yaml")
    elif not explicit:
        _upgrade_event_log_block(home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def _upgrade_event_log_block(settings_file: Path) -> None:
    """A home copied from the template of 3f55b51..d8d4284 named the pooled event log with its files
    found through DAGSTER_HOME; the same log is now the default of the template's instance class,
    which finds them in the instance's own folder (the same files, so the history stays)."""
    import yaml

    settings = yaml.safe_load(settings_file.read_text()) or {}
    block = settings.get("event_log_storage") or {}
    if block.get("module") != "activation_assets.orchestration.event_log":
        return
    del settings["event_log_storage"]
    settings["instance_class"] = yaml.safe_load(INSTANCE_TEMPLATE.read_text())["instance_class"]
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))


# --- running -------------------------------------------------------------------------------------


class _ProgressHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say(f"      {record.getMessage()}")


def materialized_partitions(instance, config: ActivationConfig):
    """Partitions materialized according to both Dagster and the warehouse's own log."""
    import dagster as dg


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


# Dagster's console logger would print a failed step's stack; the command says the failure once
# itself (`_failure_message`), so only what is worse than an error reaches the console.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _failure_message(result) -> str:
    """A failed step's own sentence when it failed on purpose (a `dagster.Failure`); for anything
    else its error, and where its stack is."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            message = error.message.strip().removeprefix("dagster._core.definitions.events.Failure: ")
            if error.cls_name == "Failure":
                return message
            return f"{message} (step {event.step_key} of run {result.run_id}: its stack is in the run's logs in the UI)"
    return f"the run failed (see run {result.run_id}'s logs in the UI)"


def execute(config: ActivationConfig, runs: list[Run], instance=None) -> int:
    """Make the runs in order; returns the number of failed checks, raises CommandError on a failed run."""
    import dagster as dg


    defs = build_defs(config, check_files=False)
    instance = instance or dg.DagsterInstance.get()
    resume_collection()  # the command's start-up ends here (see cli.process)
    failed_checks = 0
    handler = _ProgressHandler()
    progress = logging.getLogger("activation_assets.progress")
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        with _lighter_bookkeeping():
            failed_checks = _execute(runs, instance, defs)
    finally:
        progress.removeHandler(handler)
    return failed_checks


# Dagster's own switches for lighter bookkeeping, for this command's runs only (restored after; set
# either variable to keep Dagster's default):
# - a range run records one "planned" event per asset instead of one per partition, half of its
#   bookkeeping per asset partition (about 10 ms each on SQLite). The price: in the UI, the
#   partitions of a failed run of this command show as missing rather than failed; the command says
#   which run failed and why, and `activation status` lists them;
# - events are written in batches of 100 (one statement each, a write of each event alone should
#   the batch fail): on Postgres the no-op bookkeeping of a 112-day range went from 96 s to 18 s.
LIGHTER_BOOKKEEPING = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1", "DAGSTER_EVENT_BATCH_SIZE": "100"}


@contextlib.contextmanager
def _lighter_bookkeeping():
    before = {name: os.environ.get(name) for name in LIGHTER_BOOKKEEPING}
    for name, value in LIGHTER_BOOKKEEPING.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)


def _job(defs, run: Run):
    """The run's named job (`Run.job`), without the fact's source check on a fact run that is not
    the behavior's last (see `Run.checks`)."""
    import dagster as dg

    job = defs.resolve_job_def(run.job)
    if run.checks:
        return job
    return job.get_subset(asset_selection={dg.AssetKey(key) for key in run.keys}, asset_check_selection=set())


def _execute(runs: list[Run], instance, defs) -> int:
    import dagster as dg

    failed_checks = 0
    for number, run in enumerate(runs, 1):
        first, last = run.periods[0].isoformat(), run.periods[-1].isoformat()
        say(f"[{number}/{len(runs)}] {run.label}: {len(run.periods)} partition(s) {first}..{last}")
        began = time.monotonic()
        result = _job(defs, run).execute_in_process(
            instance=instance,
            tags={RANGE_START: first, RANGE_END: last},
            raise_on_error=False,
            run_config=QUIET,
        )
        if not result.success:
            raise CommandError(f"{run.label} failed: {_failure_message(result)}")
        if run.grain is None:
            _say_dropped(result)
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


def _say_dropped(result) -> None:
    """A fact run's rows read and dropped by reason, summed over its days (each day's are its
    partition's metadata)."""
    totals: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        for key, entry in event.materialization.metadata.items():
            if key == "rows_read" or key.startswith("dropped_"):
                totals[key] = totals.get(key, 0) + int(entry.value)
    if totals:
        dropped = ", ".join(f"{n} {k.removeprefix('dropped_').replace('_', ' ')}" for k, n in totals.items()
                            if k != "rows_read")
        say(f"      {totals.get('rows_read', 0)} source rows read on these days; dropped: {dropped}")


def build_dbt(config: ActivationConfig, instance, downstream: bool = False) -> None:
    """`dbt build` of the config's dbt project as one Dagster run, so the UI shows the models
    materialized: the models the layer reads (before it), or with `downstream` those that read the
    layer (after it). Skipped when nothing it reads changed since its last successful build and
    its models are in the warehouse; what the downstream models read is the layer's partition log."""
    import dagster as dg

    from activation_assets.orchestration import dbt as dbt_project

    assets, resources = dbt_definitions(config)
    name = dbt_project.DBT_DOWNSTREAM if downstream else dbt_project.DBT_UPSTREAM
    chosen = [a for a in assets if isinstance(a, dg.AssetsDefinition) and a.node_def.name == name]
    if not chosen:
        return  # no model reads the layer
    inputs, last = dbt_project.build_inputs(config), dbt_project.last_build_path(config.dbt, downstream)
    with open_warehouse(config, read_only=True) as warehouse:
        if inputs is not None and downstream:
            logged = (sorted(map(str, warehouse.log_entries(behavior_tables(config.behaviors))))
                      if warehouse is not None else [])
            inputs = hashlib.sha256("\n".join([inputs, *logged]).encode()).hexdigest()
        if (inputs is not None and last.exists() and last.read_text() == inputs and warehouse is not None
                and dbt_project.models_in_warehouse(config, warehouse, downstream)):
            say(f"dbt build of {config.dbt.project_dir}{' (downstream of the layer)' if downstream else ''}:"
                " skipped, nothing it reads changed since its last build")
            return
    what = "the models downstream of the layer" if downstream else "the fact models"
    say(f"dbt build of {config.dbt.project_dir} ({what}), as a Dagster run")
    resume_collection()
    began = time.monotonic()
    result = dg.materialize([*assets], selection=dg.AssetSelection.assets(*chosen), instance=instance,
                            resources=resources, raise_on_error=False, run_config=QUIET)
    if not result.success:
        last.unlink(missing_ok=True)
        after = "the activation layer is built; only these models are not" if downstream else \
            "nothing of the activation graph was run"
        raise CommandError(f"dbt build failed: {_failure_message(result)}. See the run in the UI or"
                           f" {config.dbt.project_dir}/target; {after}.")
    if inputs is not None:
        last.write_text(inputs)  # what this build read (taken before it: a change during it builds again)
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    models = len(result.get_asset_materialization_events())
    say(f"      done in {time.monotonic() - began:.1f} s: {models} model(s), dbt tests:"
        f" {len(result.get_asset_check_evaluations()) - len(failed)}/{len(result.get_asset_check_evaluations())} passed")
    for evaluation in failed:
        say(f"      dbt TEST FAILED {evaluation.asset_key.to_user_string()}.{evaluation.check_name}")
