"""The `warehouse` resource the assets, checks and sensors share, bound once in `build_defs`.

DuckDB is Dagster's `DuckDBResource` (its connection retries a lock held by a process outside this
project), opened once per run; Spark is dagster-pyspark's lazy session (nothing starts until a step needs it), plus the
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
from pydantic import PrivateAttr

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
    return RunDuckDBResource(
        database=duck.database,
        connection_config={"memory_limit": duck.memory_limit} if duck.memory_limit else {},
    )


class RunDuckDBResource(DuckDBResource):
    """Dagster's DuckDBResource, opened once per run (or sensor tick) rather than once per step.

    A day's run has nine steps, and opening the database file, pinning the session and checking the
    records, then closing it (a checkpoint) cost 50-70 ms a step at 500k users. The run holds the
    lock from its first step to its end (its steps run one after the other in its process, and the
    pool runs one run at a time per database). Each step still starts clean: what a failed step left
    in a transaction is rolled back and the tables it staged are dropped when it ends
    (`DuckDBWarehouse.end_step`)."""

    _opened: Any = PrivateAttr(default=None)

    def warehouse(self, lock_timeout: float) -> Warehouse:
        if self._opened is None:
            duckdb = engine("duckdb")
            with ExitStack() as stack:
                stack.enter_context(duckdb.database_lock(self.database, lock_timeout))
                with duckdb.opened(self.database):  # DuckDBResource retries for a while first
                    conn = stack.enter_context(self.get_connection())
                warehouse = stack.enter_context(duckdb.session(conn))
                self._opened = (stack.pop_all(), warehouse)
        return self._opened[1]

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            opened[0].close()


def _spark_resource(config: ActivationConfig) -> Any:
    from activation_assets.orchestration.spark_resource import SparkResource  # only Spark projects import pyspark

    spark = engine("spark")
    settings = config.warehouse.spark
    return SparkResource(spark_config=spark.spark_config(settings), database=settings.database,
                         lock_file=spark.lock_file(settings))


@contextmanager
def connect(resource: Any, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[Warehouse]:
    """The step's warehouse, from the bound resource."""
    if isinstance(resource, RunDuckDBResource):
        warehouse = resource.warehouse(lock_timeout)
        try:
            yield warehouse
        finally:
            warehouse.end_step()
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
