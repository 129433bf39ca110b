"""The warehouses the models run in: one interface (`base.Warehouse`), one module per engine, and
this registry, the one place an engine is chosen (by `warehouse:` in the config: `duckdb` or `spark`).

An engine module offers `open_warehouse(config, read_only)` and `open_for_reading(config)`, and its
`Warehouse` subclass. Engines are imported on first use: a DuckDB project never imports PySpark.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from activation_assets.config import ActivationConfig
from activation_assets.engines.base import ActivationError, Warehouse

ENGINES = {
    "duckdb": "activation_assets.engines.duckdb",
    "spark": "activation_assets.engines.spark",
}

__all__ = ["ENGINES", "ActivationError", "Warehouse", "as_warehouse", "engine", "open_for_reading", "open_warehouse"]


def engine(name: str) -> ModuleType:
    """The module of an engine, by the name `warehouse:` gives it."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])


@contextmanager
def open_warehouse(config: ActivationConfig, read_only: bool = False) -> Iterator[Warehouse | None]:
    """The configured warehouse outside Dagster (CLI planning, validation, summary, report).
    Yields None for a DuckDB database that does not exist yet when only reading."""
    with engine(config.engine).open_warehouse(config, read_only) as warehouse:
        yield warehouse


@contextmanager
def open_for_reading(config: ActivationConfig) -> Iterator[Warehouse]:
    """A warehouse to inspect sources with that creates nothing."""
    with engine(config.engine).open_for_reading(config) as warehouse:
        yield warehouse


def as_warehouse(conn: Any) -> Warehouse:
    """Steps and checks accept a bare DuckDB connection too (tests, benchmarks, scripts)."""
    if isinstance(conn, Warehouse):
        return conn
    return engine("duckdb").DuckDBWarehouse(conn)
