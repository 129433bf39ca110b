"""The code location: `activation.yaml` (or $ACTIVATION_CONFIG) in, every behavior's graph out.

A config that cannot be used makes the location fail to load with the config's own message.

Resources and the executor are bound once here. The in-process executor runs a run's steps in one
process: a subprocess per step only adds seconds, and DuckDB takes one writer at a time anyway.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from .config import ActivationConfig, ConfigError, load_config, missing_source_files
from .factory import behavior_assets


def build_definitions(config: ActivationConfig, check_files: bool = True) -> dg.Definitions:
    if check_files:
        problems = missing_source_files(config)
        if problems:
            raise ConfigError(f"{config.path}: " + "; ".join(problems))
    if config.database != ":memory:":
        Path(config.database).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Single-run backfill policies and nonexistent-upstream mappings are what the graph is
        # built on; Dagster flags them as beta once per asset, which is noise to a user.
        warnings.simplefilter("ignore", dg.BetaWarning)
        assets = [asset for behavior in config.behaviors for asset in behavior_assets(behavior)]
    automation = dg.AutomationConditionSensorDefinition(
        "activation_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.STOPPED,  # opt in from the UI: Automation -> activation_automation
        # A self-dependent asset advances one partition per evaluation: tick often.
        minimum_interval_seconds=10,
        description="Materializes new fact days as they end and propagates every fact update (late data"
        " included) through FirstLast, activation and the models read off it.",
    )
    return dg.Definitions(
        assets=assets,
        sensors=[automation],
        resources={"duckdb": DuckDBResource(
            database=config.database,
            connection_config={"memory_limit": config.memory_limit} if config.memory_limit else {},
        )},
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily, so importing this module (as the CLI and tests do) reads no config."""
    return build_definitions(load_config())
