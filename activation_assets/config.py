"""The typed `activation.yaml`: what a behavior is, where its facts come from, and its grains.

Everything that can be wrong in a config file is reported as one `ConfigError` whose message
names the file, the behavior and the key, and says what to do — never a pydantic trace.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "activation.yaml"
CONFIG_ENV_VAR = "ACTIVATION_CONFIG"

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class ConfigError(ValueError):
    """A config file that cannot be used, explained for the person who wrote it."""


class Grain(str, Enum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"

    def __str__(self) -> str:
        return self.value


ALL_GRAINS = (Grain.daily, Grain.weekly, Grain.monthly)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Exactly one of `parquet`, `csv` (a path or glob) or `table` (in the DuckDB database)."""

    parquet: str | None = None
    csv: str | None = None
    table: str | None = None
    where: str | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> SourceConfig:
        given = [k for k in ("parquet", "csv", "table") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "a source is exactly one of `parquet: PATH`, `csv: PATH` or `table: NAME`"
                f" (found {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return "parquet" if self.parquet else "csv" if self.csv else "table"

    @property
    def location(self) -> str:
        return self.parquet or self.csv or self.table or ""

    def describe(self) -> str:
        where = f" where {self.where}" if self.where else ""
        return f"{self.kind} {self.location}{where}"


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}; use an IANA name such as 'UTC' or 'Asia/Seoul'")
    return value


def _check_week_start(value: str | None) -> str | None:
    if value is None:
        return None
    if value.lower() not in WEEKDAYS:
        raise ValueError(f"unknown week_start {value!r}; use one of {', '.join(WEEKDAYS)}")
    return value.lower()


class BehaviorConfig(_Strict):
    name: str
    source: SourceConfig
    user_column: str = "user_id"
    time_column: str = "occurred_at"
    start_date: dt.date
    end_date: dt.date | None = None
    grains: tuple[Grain, ...] = ALL_GRAINS
    timezone: str = "UTC"
    week_start: str = "monday"
    description: str | None = None
    owners: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(
                f"behavior name {value!r} is not a lowercase identifier"
                " (letters, digits and _, starting with a letter), e.g. visited_app"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _check_timezone(value)  # type: ignore[return-value]

    @field_validator("week_start")
    @classmethod
    def _week_start(cls, value: str) -> str:
        return _check_week_start(value)  # type: ignore[return-value]

    @field_validator("grains")
    @classmethod
    def _grains(cls, value: tuple[Grain, ...]) -> tuple[Grain, ...]:
        if not value:
            raise ValueError("grains is empty; list at least one of daily, weekly, monthly")
        # A fixed order keeps asset graphs and summaries stable whatever order the file uses.
        return tuple(g for g in ALL_GRAINS if g in set(value))

    @model_validator(mode="after")
    def _dates(self) -> BehaviorConfig:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self

    @property
    def weekday_index(self) -> int:
        """Monday = 0 … Sunday = 6, as `datetime.date.weekday()`."""
        return WEEKDAYS.index(self.week_start)


class ActivationConfig(_Strict):
    database: str = "data/activation.duckdb"
    # DuckDB's memory_limit (e.g. "2GB"); beyond it DuckDB spills to disk. Default: DuckDB's own
    # (80% of the machine's memory).
    memory_limit: str | None = None
    timezone: str = "UTC"
    week_start: str = "monday"
    behaviors: tuple[BehaviorConfig, ...] = Field(min_length=1)
    path: Path | None = None  # where the file was read from; set by `load_config`

    @model_validator(mode="after")
    def _unique_names(self) -> ActivationConfig:
        seen: set[str] = set()
        for behavior in self.behaviors:
            if behavior.name in seen:
                raise ValueError(f"behavior name {behavior.name!r} is used twice; names must be unique")
            seen.add(behavior.name)
        return self

    def behavior(self, name: str) -> BehaviorConfig:
        for behavior in self.behaviors:
            if behavior.name == name:
                return behavior
        known = ", ".join(b.name for b in self.behaviors)
        raise ConfigError(f"no behavior named {name!r} in {self.path}; configured: {known}")

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def config_path_from_env() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def _resolve(base: Path, location: str) -> str:
    return location if os.path.isabs(location) else str((base / location).resolve())


def _explain(error: ValidationError, raw: dict[str, Any], path: Path) -> str:
    lines = [f"{path}: the activation config is not valid:"]
    for item in error.errors():
        loc = list(item["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "behaviors" and isinstance(loc[1], int):
            behaviors = raw.get("behaviors") or []
            name = behaviors[loc[1]].get("name") if loc[1] < len(behaviors) and isinstance(behaviors[loc[1]], dict) else None
            where = f"behavior {name!r}" if name else f"behavior #{loc[1] + 1}"
            loc = loc[2:]
        key = ".".join(str(part) for part in loc if not str(part).startswith("function-"))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key {key!r} (check its spelling; see README 'Configuration')"
        elif item["type"] == "missing":
            message = f"required key {key!r} is missing"
        else:
            message = f"{key}: {message}" if key else message
        lines.append(f"  - {where + ': ' if where else ''}{message}")
    return "\n".join(lines)


def parse_config(raw: Any, path: Path) -> ActivationConfig:
    """Validate a parsed YAML document; defaults at the top level flow into each behavior."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a `behaviors:` list at the top level")
    base = path.parent
    document = dict(raw)
    try:
        _check_timezone(document.get("timezone"))
        _check_week_start(document.get("week_start"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    behaviors = document.get("behaviors")
    if isinstance(behaviors, list):
        filled = []
        for entry in behaviors:
            if isinstance(entry, dict):
                entry = dict(entry)
                for key in ("timezone", "week_start"):
                    if key in document and key not in entry:
                        entry[key] = document[key]
                source = entry.get("source")
                if isinstance(source, dict):
                    source = dict(source)
                    for kind in ("parquet", "csv"):
                        if isinstance(source.get(kind), str):
                            source[kind] = _resolve(base, source[kind])
                    entry["source"] = source
            filled.append(entry)
        document["behaviors"] = filled
    if isinstance(document.get("database"), str) and document["database"] != ":memory:":
        document["database"] = _resolve(base, document["database"])
    document["path"] = path
    try:
        return ActivationConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, raw, path)) from None


def load_config(path: str | Path | None = None) -> ActivationConfig:
    path = Path(path) if path else config_path_from_env()
    path = path.resolve()
    if not path.exists():
        raise ConfigError(
            f"config file {path} does not exist; pass --config PATH or set {CONFIG_ENV_VAR}"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, path)


def missing_source_files(config: ActivationConfig) -> list[str]:
    """File sources whose path or glob matches nothing, as readable lines (tables are checked at run time)."""
    problems = []
    for behavior in config.behaviors:
        source = behavior.source
        if source.kind in ("parquet", "csv") and not glob.glob(source.location, recursive=True):
            problems.append(
                f"behavior {behavior.name!r}: source {source.kind} {source.location!r} matches no file"
                " (generate the sample data with `activation sample-data`, or fix the path; relative"
                " paths are relative to the config file)"
            )
    return problems
