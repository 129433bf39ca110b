"""Changed sources in the UI: an asset check on each fact, and a sensor that brings everything up to
date with one backfill (the Dagster shell around `changes.py`).

Dagster's staleness marks one hop, and its automation walks a self-dependent chain one partition per
tick. This sensor instead asks the warehouse which fact days changed and which partitions were built
before one of their inputs was written again, and requests one backfill over the affected range of
every asset; each asset's single-run policy then rebuilds its range in one run, in order.
"""


import hashlib
import json

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionStatus

from activation_assets.models import sql
from activation_assets.pipeline.changes import SourceChanges, detect
from activation_assets.pipeline.plan import affected
from activation_assets.config import ActivationConfig, BehaviorConfig
from activation_assets.engines.base import ActivationError
from activation_assets.orchestration.resources import RESOURCE, connect, warehouse_of

CHECK_NAME = "source_days_current"
SENSOR_NAME = "activation_source_changes"
SENSOR_LOCK_SECONDS = 5  # a sensor tick must not wait for a running backfill: it looks again next tick


def check_metadata(changes: SourceChanges) -> dict:
    days = changes.outdated
    metadata = {
        "outdated_days": len(days),
        "files": changes.describe_files(),
        "read": changes.read,
        "summary": (f"{len(days)} fact day(s) outdated: their source rows changed" if days
                    else "every fact day matches its source rows"),
    }
    if days:
        metadata["days"] = dg.MetadataValue.md("\n".join(changes.describe_days("- ", limit=50)))
        metadata["first_outdated_day"] = str(days[0])
    return metadata


def source_check(behavior: BehaviorConfig) -> dg.AssetChecksDefinition:
    fact = sql.fact_table(behavior.name)

    @dg.asset_check(
        asset=fact, name=CHECK_NAME, blocking=False, required_resource_keys={RESOURCE},
        description=(
            "Fails while some fact days no longer match their source rows (late, corrected or deleted"
            " rows): lists them. Reads only the days of files that changed since they were last seen."
            f" `activation materialize` or the `{SENSOR_NAME}` sensor brings them up to date."),
    )
    def _source_days_current(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with warehouse_of(context) as warehouse:
            changes = detect(warehouse, behavior)
        metadata = check_metadata(changes)
        return dg.AssetCheckResult(passed=not changes.days, metadata=metadata, description=metadata["summary"],
                                   severity=dg.AssetCheckSeverity.WARN)

    return _source_days_current


def latest_materialization(instance: dg.DagsterInstance, key: tuple[str, ...]) -> int | None:
    """The storage id of an asset's latest materialization (any partition), None if never."""
    records = instance.fetch_materializations(dg.AssetKey(list(key)), limit=1).records
    return records[0].storage_id if records else None


def source_changes_sensor(config: ActivationConfig) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,  # opt in from the UI: Automation -> activation_source_changes
        required_resource_keys={RESOURCE},
        asset_selection=dg.AssetSelection.all(),
        description=(
            "Finds fact days whose source rows changed (reading only changed files' days) and partitions"
            " built before an input was written again, and launches one backfill over the affected range"
            " of every asset: a correction far back propagates in one run per asset, not one partition"
            " per tick. A source that is an upstream asset or dbt model is read again only after a new"
            " materialization of it. Also reports each fact's source_days_current check."),
    )
    def _sensor(context: dg.SensorEvaluationContext):
        in_progress = context.instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=1)
        if in_progress:
            return dg.SkipReason(f"backfill {in_progress[0].backfill_id} is in progress; looking again after it")
        previous = json.loads(context.cursor) if context.cursor else {}
        seen, targets, events = {}, set(), []
        # A source that is an upstream asset (or dbt model) can only change when that asset is
        # materialized: it is read again only after a new materialization of it.
        upstream = {b.name: latest_materialization(context.instance, b.source.upstream)
                    for b in config.behaviors if b.source.upstream}
        seen["_upstream"] = upstream
        try:
            with connect(getattr(context.resources, RESOURCE), lock_timeout=SENSOR_LOCK_SECONDS) as warehouse:
                for behavior in config.behaviors:
                    look = behavior.name not in upstream or upstream[behavior.name] != previous.get(
                        "_upstream", {}).get(behavior.name, -1)
                    try:
                        changes, wanted = affected(behavior, warehouse, look_at_source=look)
                    except ActivationError as exc:  # this behavior's source cannot be read: the others go on
                        context.log.warning(str(exc))
                        seen[behavior.name] = f"error: {exc}"
                        metadata = {"summary": str(exc)}
                        passed = False
                    else:
                        targets |= wanted
                        seen[behavior.name] = [str(d) for d in changes.outdated] if look else previous.get(
                            behavior.name, [])
                        metadata, passed = check_metadata(changes), not changes.days
                    if seen[behavior.name] != previous.get(behavior.name):
                        events.append(dg.AssetCheckEvaluation(
                            asset_key=dg.AssetKey(sql.fact_table(behavior.name)), check_name=CHECK_NAME,
                            passed=passed, metadata=metadata, severity=dg.AssetCheckSeverity.WARN,
                            description=metadata["summary"]))
        except ActivationError as exc:  # the warehouse is busy (a run holds its lock): next tick
            return dg.SkipReason(str(exc))
        requests = []
        requested = hashlib.sha1(json.dumps(sorted((t, p.isoformat()) for t, p in targets)).encode()).hexdigest() \
            if targets else None
        seen["_requested"] = requested
        if targets and requested == previous.get("_requested"):
            return dg.SensorResult(asset_events=events, cursor=json.dumps(seen), skip_reason=(
                "the same partitions are still outdated after the backfill this sensor launched for them: see"
                " that backfill's runs (a failure?), fix the cause, then run `activation status`"))
        if targets:
            graph = context.repository_def.asset_graph
            subset = AssetGraphSubset.from_asset_partition_set(
                {AssetKeyPartitionKey(dg.AssetKey(table), p.isoformat()) for table, p in targets}, graph)
            requests.append(dg.RunRequest.for_asset_graph_subset(subset, tags={"activation/trigger": SENSOR_NAME}))
        return dg.SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps(seen),
                               skip_reason=None if requests or events else "every fact day and partition is current")

    return _sensor
