"""The code location: `activation.yaml` (or $ACTIVATION_CONFIG) in, every behavior's graph out.

A config that cannot be used makes the location fail to load with the config's own message.

Resources and the executor are bound once here: the `warehouse` resource is a DuckDBResource (the
default) or, with `warehouse: {spark: ...}`, a lazy PySpark session. The in-process executor runs a
run's steps in one process: a subprocess per step only adds seconds (a JVM per step, on Spark), and
the warehouse takes one writer at a time anyway.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from activation_assets.config import ActivationConfig, ConfigError, missing_source_files
from activation_assets import tables
from activation_assets.models import sql
from activation_assets.orchestration.dbt import with_dbt_models
from activation_assets.orchestration.factory import behavior_assets
from activation_assets.orchestration.jobs import behavior_jobs, daily_sensor
from activation_assets.orchestration.resources import RESOURCE, warehouse_resource
from activation_assets.orchestration.sensors import source_changes_sensor, source_check


def _partitions_by_key(upstream: Sequence[dg.AssetsDefinition | dg.AssetSpec]) -> dict:
    found = {}
    for item in upstream:
        if isinstance(item, dg.AssetSpec):
            found[item.key] = item.partitions_def
        else:
            for key in item.keys:
                found[key] = item.specs_by_key[key].partitions_def
    return found


def _with_table_names(config: ActivationConfig, assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Each asset's relation as Dagster names it (`dagster/table_name`: catalog.schema.table for a
    DuckDB file, database.table on Spark) and its kind: a table, or the activation view."""
    if config.database is not None:
        prefix = f"{Path(config.database).stem}.main." if config.database != ":memory:" else "memory.main."
    else:
        prefix = f"{config.warehouse.spark.database}."
    views = {sql.activation_table(b.name, g) for b in config.behaviors for g in b.grains}

    def named(spec: dg.AssetSpec) -> dg.AssetSpec:
        table = spec.key.path[-1]
        return spec.merge_attributes(metadata={"dagster/table_name": prefix + table},
                                     kinds={"view" if table in views else "table"})

    return dg.map_asset_specs(named, assets)


def build_defs(
    config: ActivationConfig, upstream: Sequence[dg.AssetsDefinition | dg.AssetSpec] = (), check_files: bool = True,
) -> dg.Definitions:
    """The whole activation layer of a config as `Definitions`, for projects that compose their own.

    `upstream` are the assets that behaviors with `source: {asset: KEY}` read, when the caller defines
    them: their partitions decide how a fact maps onto them (day to day, or as a whole). They are
    not included in the result; merge it with the caller's (`dg.Definitions.merge`). With a `dbt:`
    project, its models (and the raw sources they read) are included.
    """
    config = with_dbt_models(config)
    tables.check_segment_names(config.behaviors)
    if check_files:
        problems = missing_source_files(config)
        if problems:
            raise ConfigError(f"{config.path}: " + "; ".join(problems))
    extra_assets: list = []
    resources: dict = {RESOURCE: warehouse_resource(config)}
    if config.dbt is not None:
        from activation_assets.orchestration.dbt import dbt_definitions

        dbt_assets, dbt_resources = dbt_definitions(config)
        extra_assets += dbt_assets
        resources |= dbt_resources
    partitions = _partitions_by_key([*upstream, *extra_assets])
    with warnings.catch_warnings():
        # Single-run backfill policies and nonexistent-upstream mappings are what the graph is
        # built on; Dagster flags them as beta once per asset, which is noise to a user.
        warnings.simplefilter("ignore", dg.BetaWarning)
        assets = [
            asset for behavior in config.behaviors for asset in behavior_assets(
                behavior, config.engine,
                partitions.get(dg.AssetKey(list(behavior.source.upstream))) if behavior.source.upstream else None)
        ]
    assets = _with_table_names(config, assets)
    automation = dg.AutomationConditionSensorDefinition(
        "activation_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.STOPPED,  # opt in from the UI: Automation -> activation_automation
        # A self-dependent asset advances one partition per evaluation: tick often.
        minimum_interval_seconds=10,
        description="Materializes new fact days as they end and propagates every fact update (late data"
        " included) through FirstLast, activation and the models read off it.",
    )
    # The source-changes sensor opens the warehouse from the daemon, between runs: DuckDB only (a Spark
    # session in the daemon would hold the local metastore); on Spark, `activation status/materialize`.
    jobs = [job for behavior in config.behaviors for job in behavior_jobs(behavior)]
    sensors = [automation, daily_sensor(config, jobs)] + (
        [source_changes_sensor(config)] if config.engine == "duckdb" else [])
    return dg.Definitions(
        assets=extra_assets + assets,
        jobs=jobs,
        asset_checks=[source_check(behavior) for behavior in config.behaviors],
        sensors=sensors,
        resources=resources,
        executor=dg.in_process_executor,
    )


build_definitions = build_defs  # the name the CLI, tests and benchmarks have used
