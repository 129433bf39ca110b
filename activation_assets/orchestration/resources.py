"""The `warehouse` resource the assets, checks and sensors share, bound once in `build_defs`.

DuckDB is Dagster's `DuckDBResource` (its connection retries a lock held by a process outside this
project); Spark is dagster-pyspark's lazy session (nothing starts until a step needs it), plus the
database (schema) that holds the activation tables and, for a local warehouse, its lock file. Both
hand the step a `Warehouse` of the engine the registry (`engines`) names for the resource.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from activation_assets.config import ActivationConfig
from activation_assets.engines import engine
from activation_assets.engines.base import LOCK_TIMEOUT_SECONDS, ActivationError, Warehouse

RESOURCE = "warehouse"


def warehouse_resource(config: ActivationConfig) -> Any:
    if config.engine == "spark":
        return _spark_resource(config)
    duck = config.warehouse.duckdb
    if duck.database != ":memory:":
        Path(duck.database).parent.mkdir(parents=True, exist_ok=True)
    return DuckDBResource(
        database=duck.database,
        connection_config={"memory_limit": duck.memory_limit} if duck.memory_limit else {},
    )


def _spark_resource(config: ActivationConfig) -> Any:
    from activation_assets.orchestration.spark_resource import SparkResource  # only Spark projects import pyspark

    spark = engine("spark")
    settings = config.warehouse.spark
    return SparkResource(spark_config=spark.spark_config(settings), database=settings.database,
                         lock_file=spark.lock_file(settings))


@contextmanager
def connect(resource: Any, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[Warehouse]:
    """The step's warehouse, from the bound resource."""
    if isinstance(resource, DuckDBResource):
        duckdb = engine("duckdb")
        with duckdb.database_lock(resource.database, lock_timeout), ExitStack() as stack:
            with duckdb.opened(resource.database):  # DuckDBResource retries for a while first
                conn = stack.enter_context(resource.get_connection())
            with duckdb.session(conn) as warehouse:
                yield warehouse
        return
    with engine("spark").connect(resource.spark_session, resource.database, resource.lock_file) as warehouse:
        yield warehouse


@contextmanager
def warehouse_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> Iterator[Warehouse]:
    """The step's warehouse; a problem the user can act on fails the step with its one sentence
    (no stack trace, no retry)."""
    try:
        with connect(getattr(context.resources, RESOURCE)) as warehouse:
            yield warehouse
    except ActivationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
