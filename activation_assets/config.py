"""The typed `activation.yaml`: what a behavior is, where its facts come from, and its grains.

Everything that can be wrong in a config file is reported as one `ConfigError` whose message
names the file, the behavior and the key, and says what to do — never a pydantic trace.

Parsing is pure: it reads the YAML and validates it, nothing else. A `dbt_model:` source is
resolved to its asset key and relation (reading, and if stale preparing, the dbt manifest) when
definitions are built or a command needs it: `orchestration.dbt.with_dbt_models`.
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

DEFAULT_CONFIG_PATH = Path("activation.yaml")  # in the working directory
# Where `activation sample-data` writes by default, relative to the working directory.
SAMPLE_DATA_DIR = Path("data") / "raw"
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
    """Where a behavior's facts live: exactly one of
    - `parquet` or `csv`: a path or glob (relative to the config file);
    - `table`: a table or view in the warehouse;
    - `asset`: an upstream Dagster asset (key as "a/b" or a list) whose relation is in the
      warehouse, named like the key's last part unless `table:` names it;
    - `dbt_model`: a model of the config's dbt project; its asset key and relation come from the
      dbt manifest (filled in as `asset` and `table` when the config is read).
    """

    parquet: str | None = None
    csv: str | None = None
    table: str | None = None
    asset: tuple[str, ...] | None = None
    dbt_model: str | None = None
    where: str | None = None

    @field_validator("asset", mode="before")
    @classmethod
    def _asset_key(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split("/")]
        if isinstance(value, (list, tuple)) and (not value or not all(isinstance(p, str) and p for p in value)):
            raise ValueError(f"asset key {value!r} is not valid; write it as \"a/b\" or a list of names [a, b]")
        return value

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> SourceConfig:
        given = [k for k in ("parquet", "csv", "asset", "dbt_model") if getattr(self, k)]
        # `table:` names the relation of an upstream asset or dbt model, or is a source of its own.
        if self.table and not (self.asset or self.dbt_model):
            given.append("table")
        if self.asset and self.dbt_model:
            given = [k for k in given if k != "asset"]  # a dbt model's key, filled in from the manifest
        if len(given) != 1:
            raise ValueError(
                "a source is exactly one of `parquet: PATH`, `csv: PATH`, `table: NAME`, `asset: KEY`"
                f" or `dbt_model: NAME` (found {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        """What the engine reads: a file format, or a relation of the warehouse ("table")."""
        return "parquet" if self.parquet else "csv" if self.csv else "table"

    @property
    def location(self) -> str:
        if self.parquet or self.csv:
            return self.parquet or self.csv or ""
        if self.table:
            return self.table
        return self.asset[-1] if self.asset else ""

    @property
    def upstream(self) -> tuple[str, ...] | None:
        """The asset key path that `fact_<b>` depends on (an upstream asset or dbt model)."""
        return self.asset if (self.asset or self.dbt_model) else None

    def describe(self) -> str:
        where = f" where {self.where}" if self.where else ""
        if self.dbt_model:
            return f"dbt model {self.dbt_model} (table {self.location}){where}"
        if self.asset:
            return f"asset {'/'.join(self.asset)} (table {self.location}){where}"
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


class EngagementConfig(_Strict):
    """The rolling windows of the daily engagement states: a week of W days, a month of M days."""

    week_days: int = 7
    month_days: int = 28

    @model_validator(mode="after")
    def _windows(self) -> EngagementConfig:
        # The daily FirstLast keeps 63 days of history (bits 0..62); yesterday's month needs M + 1.
        if not 1 <= self.week_days < self.month_days <= MAX_MONTH_DAYS:
            raise ValueError(
                f"engagement windows week_days {self.week_days} and month_days {self.month_days} are not valid:"
                f" they need 1 <= week_days < month_days <= {MAX_MONTH_DAYS} (defaults 7 and 28)")
        return self

    def describe(self) -> str:
        return f"week_days {self.week_days}, month_days {self.month_days}"


MAX_MONTH_DAYS = 62


class SegmentConfig(_Strict):
    """A user attribute every number of the layer is broken down by: the source column `column`,
    reported as segment `name` (default: the column's name), its values optionally limited to
    `values` (compared as text; the rest become 'other'), at most `max_values` values a partition."""

    column: str
    name: str | None = None
    # Written as text or as the column's own scalars (`values: [1, 2]` of an integer column); kept as text.
    values: tuple[str | int | float | bool, ...] | None = None
    max_values: int = Field(default=100, ge=1)

    @field_validator("values", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # `values: [1, 2]` of an integer column: compared as text, as the column's values are
        if isinstance(value, (list, tuple)):
            return tuple(v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
                         for v in value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("name") is None and isinstance(value.get("column"), str):
            if not IDENTIFIER.match(value["column"]):
                raise ValueError(f"segment column {value['column']!r} is not a lowercase identifier, so the segment"
                                 " needs a `name:` (letters, digits and _, starting with a letter), e.g. platform")
            return {**value, "name": value["column"]}
        return value

    @model_validator(mode="after")
    def _named(self) -> SegmentConfig:
        name = self.key
        if not IDENTIFIER.match(name):
            raise ValueError(f"segment name {name!r} is not a lowercase identifier (letters, digits and _,"
                             " starting with a letter), e.g. platform")
        if self.values is not None and not self.values:
            raise ValueError(f"segment {name!r}: `values:` is empty; list the values to keep, or leave it out")
        if self.values is not None and "other" in self.values:
            raise ValueError(f"segment {name!r}: `values:` lists 'other', the name of every value not listed;"
                             " rename that value in the source, or leave it out of `values:`")
        return self

    @property
    def key(self) -> str:
        """The segment's name N (never None once validated)."""
        return self.name or self.column

    def describe(self) -> str:
        values = f" values {list(self.values)}" if self.values is not None else ""
        return f"{self.key} = {self.column}{values}"


# The next-day retention rates a scenario can change (the engagement states they belong to are in
# `tables.RETENTION_RATES`), and the inflow's factor.
SCENARIO_RATES = ("nurr", "curr", "rurr", "surr", "iwaurr", "imaurr", "drr")
NEW_USERS = "new_users"
BASELINE = "baseline"


class GrowthModelConfig(_Strict):
    """The growth model of the daily engagement states (the contract's "Growth model"): rates over a
    trailing window of L days, a projection of H days, and named what-ifs, each `{RATE: DELTA, ...,
    new_users: FACTOR}` (DELTA absolute, in [-1, 1]; FACTOR >= 0 multiplies the inflow)."""

    window_days: int = Field(default=28, ge=1, le=365)
    horizon_days: int = Field(default=90, ge=1, le=730)
    scenarios: dict[str, dict[str, float]] = {}

    @model_validator(mode="after")
    def _scenarios(self) -> GrowthModelConfig:
        for name, changes in self.scenarios.items():
            if not IDENTIFIER.match(name) or name == BASELINE:
                raise ValueError(f"growth_model scenario {name!r}: name it with a lowercase identifier other than"
                                 f" {BASELINE!r} (always computed), e.g. better_new_user_retention")
            if not changes:
                raise ValueError(f"growth_model scenario {name!r} changes nothing; give it e.g. {{nurr: 0.02}}")
            for key, value in changes.items():
                if key == NEW_USERS:
                    if value < 0:
                        raise ValueError(f"growth_model scenario {name!r}: new_users is a factor on the inflow"
                                         f" and cannot be negative ({value}); 1.1 is 10 % more new users")
                elif key not in SCENARIO_RATES:
                    raise ValueError(f"growth_model scenario {name!r}: {key!r} is no rate; use one of"
                                     f" {', '.join(SCENARIO_RATES)} or {NEW_USERS}")
                elif not -1 <= value <= 1:
                    raise ValueError(f"growth_model scenario {name!r}: {key} {value} is not an absolute change"
                                     " of a rate; use a number in [-1, 1], e.g. 0.02 for +2 points")
        return self

    def describe(self) -> str:
        return (f"window_days {self.window_days}, horizon_days {self.horizon_days}, scenarios"
                f" {dict(sorted(self.scenarios.items()))}")

    def __hash__(self) -> int:  # a frozen model holding a dict: hashed by what it says
        return hash(self.describe())


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
    engagement: EngagementConfig = EngagementConfig()
    segments: tuple[SegmentConfig, ...] = ()
    growth_model: GrowthModelConfig | None = None
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

    @model_validator(mode="after")
    def _segment_names(self) -> BehaviorConfig:
        seen: set[str] = set()
        for segment in self.segments:
            if segment.key in seen:
                raise ValueError(f"segment name {segment.key!r} is used twice; give each segment its own `name:`")
            seen.add(segment.key)
        return self

    @model_validator(mode="after")
    def _growth_model(self) -> BehaviorConfig:
        if self.growth_model is None:
            return self
        if Grain.daily not in self.grains:
            raise ValueError("growth_model needs the daily grain (it projects the daily engagement states);"
                             " add daily to grains, or remove growth_model")
        window = self.growth_model.window_days
        if self.end_date is not None and (self.end_date - self.start_date).days < window:
            raise ValueError(f"growth_model window_days {window} needs a day with {window} days of engagement"
                             f" behind it, and {self.start_date}..{self.end_date} has none; shorten window_days")
        return self

    @property
    def forecast_start(self) -> dt.date | None:
        """The first day with a full window of engagement transitions behind it (start_date + L)."""
        if self.growth_model is None:
            return None
        return self.start_date + dt.timedelta(days=self.growth_model.window_days)

    def describe_segments(self) -> str:
        """The segments, as recorded with the tables' settings (changing them rebuilds the grains)."""
        return "; ".join(s.describe() for s in self.segments) or "none"

    @property
    def weekday_index(self) -> int:
        """Monday = 0 … Sunday = 6, as `datetime.date.weekday()`."""
        return WEEKDAYS.index(self.week_start)


class DuckDBWarehouseConfig(_Strict):
    database: str = "data/activation.duckdb"
    # DuckDB's memory_limit (e.g. "2GB"); beyond it DuckDB spills to disk. Default: DuckDB's own
    # (80% of the machine's memory).
    memory_limit: str | None = None


class SparkWarehouseConfig(_Strict):
    # e.g. "local[2]"; omitted, the session takes the cluster's (spark-submit, Databricks, EMR).
    master: str | None = None
    # Where managed tables live (spark.sql.warehouse.dir); a local path also holds the embedded
    # Derby metastore. Omitted, the cluster's own.
    warehouse_dir: str | None = None
    database: str = "default"  # the schema that holds the activation tables
    conf: dict[str, str] = Field(default_factory=dict)  # any other Spark setting, applied last

    @field_validator("database")
    @classmethod
    def _schema_name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"database {value!r} is not a lowercase identifier, e.g. activation")
        return value

    @field_validator("conf", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        # YAML turns `spark.sql.shuffle.partitions: 8` into an int; Spark settings are strings.
        if isinstance(value, dict):
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value


class WarehouseConfig(_Strict):
    """Exactly one of `duckdb:` (the default) or `spark:`."""

    duckdb: DuckDBWarehouseConfig | None = None
    spark: SparkWarehouseConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WarehouseConfig:
        given = [k for k in ("duckdb", "spark") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "warehouse is exactly one of `duckdb: {database: PATH}` or `spark: {master: ..., warehouse_dir: ...}`"
                f" (found {', '.join(given) or 'none'})")
        return self

    @property
    def engine(self) -> str:
        return "duckdb" if self.duckdb is not None else "spark"

    def describe(self) -> str:
        if self.duckdb is not None:
            return f"duckdb {self.duckdb.database}"
        spark = self.spark
        return (f"spark {spark.master or '(cluster master)'}, database {spark.database},"
                f" warehouse_dir {spark.warehouse_dir or '(cluster default)'}")


class DbtConfig(_Strict):
    """The dbt project whose models behaviors read (`source: {dbt_model: NAME}`). Its models become
    Dagster assets upstream of the facts; dbt must write into the same warehouse."""

    project_dir: str  # relative to the config file
    profiles_dir: str | None = None  # default: project_dir
    target: str | None = None  # default: the profile's own


class ActivationConfig(_Strict):
    warehouse: WarehouseConfig = WarehouseConfig(duckdb=DuckDBWarehouseConfig())
    dbt: DbtConfig | None = None
    timezone: str = "UTC"
    week_start: str = "monday"
    engagement: EngagementConfig = EngagementConfig()  # the default of every behavior
    behaviors: tuple[BehaviorConfig, ...]
    path: Path | None = None  # where the file was read from; set by `load_config`

    @model_validator(mode="after")
    def _unique_names(self) -> ActivationConfig:
        # Checked here rather than with min_length, which pydantic also reports when an entry fails.
        if not self.behaviors:
            raise ValueError("behaviors is empty; list at least one behavior")
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

    @property
    def engine(self) -> str:
        return self.warehouse.engine

    @property
    def database(self) -> str | None:
        """The DuckDB database file (None on Spark)."""
        return self.warehouse.duckdb.database if self.warehouse.duckdb else None

    @property
    def memory_limit(self) -> str | None:
        return self.warehouse.duckdb.memory_limit if self.warehouse.duckdb else None


def config_path_from_env() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def is_url(location: str) -> bool:
    """s3://…, abfss://…, dbfs:/… — a location Spark reads, not a local path."""
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", location) is not None


def _resolve(base: Path, location: str) -> str:
    """A path relative to the config file; absolute paths and URLs as given."""
    if os.path.isabs(location) or is_url(location):
        return location
    return str((base / location).resolve())


def _warehouse_document(document: dict[str, Any], base: Path, path: Path) -> dict[str, Any]:
    """`database:`/`memory_limit:` at the top level is the short form of `warehouse: {duckdb: ...}`."""
    short = {key: document.pop(key) for key in ("database", "memory_limit") if key in document}
    warehouse = document.get("warehouse")
    if short and warehouse is not None:
        raise ConfigError(
            f"{path}: `{'`, `'.join(short)}` at the top level is the short form of `warehouse: {{duckdb: ...}}`;"
            " use one or the other, not both")
    if warehouse is None:
        warehouse = {"duckdb": short}
    if not isinstance(warehouse, dict):
        return document | {"warehouse": warehouse}
    warehouse = {k: (dict(v) if isinstance(v, dict) else v) for k, v in warehouse.items()}
    duck, spark = warehouse.get("duckdb"), warehouse.get("spark")
    if isinstance(duck, dict):
        duck.setdefault("database", DuckDBWarehouseConfig.model_fields["database"].default)
        if isinstance(duck["database"], str) and duck["database"] != ":memory:":
            duck["database"] = _resolve(base, duck["database"])
    if isinstance(spark, dict) and isinstance(spark.get("warehouse_dir"), str):
        spark["warehouse_dir"] = _resolve(base, spark["warehouse_dir"])
    return document | {"warehouse": warehouse}


# Words for values that must come from a fixed list, by the key that holds them.
_NOUNS = {"grains": "grain"}


def _place(loc: list[Any], raw: dict[str, Any]) -> str:
    """Where a value sits in the YAML, in the file's own words: `behaviors[0] (visited_app) grains[1]`."""
    text = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
            behaviors = raw.get("behaviors") if loc[:i] == ["behaviors"] else None
            entry = behaviors[part] if isinstance(behaviors, list) and part < len(behaviors) else None
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                text += f" ({entry['name']}) "
        elif not str(part).startswith("function-"):
            text += str(part) if not text or text.endswith(" ") else f".{part}"
    return text.strip()


def _problem(item: dict[str, Any]) -> str:
    """One validation error as a sentence about the value the user wrote."""
    kind, value = item["type"], item.get("input")
    field = next((str(p) for p in reversed(item["loc"]) if isinstance(p, str)), "")
    shown = repr(value) if not isinstance(value, (dict, list)) else "a " + type(value).__name__
    if kind == "extra_forbidden":
        return f"unknown key {field!r} (check its spelling; see README 'Configuration')"
    if kind == "missing":
        return f"required key {field!r} is missing"
    if kind == "enum":
        choices = item.get("ctx", {}).get("expected", "").replace("'", "")
        return f"{shown} is not a {_NOUNS.get(field, 'valid value')}; use {choices}"
    if kind.startswith("date") or kind.startswith("datetime"):
        return f"{shown} is not a date; write it as YYYY-MM-DD, e.g. 2025-01-31"
    if kind == "string_type":
        return f"{shown} is not text; write a string (quote it if YAML reads it as something else)"
    if kind in ("tuple_type", "list_type"):
        return f"{shown} is not a list; write a YAML list such as [a, b]"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{shown} is not a mapping; write `key: value` pairs"
    if kind == "value_error":
        return item["msg"].removeprefix("Value error, ")
    return f"{shown} is not valid: {item['msg'].replace('Input should be', 'it should be')}"


def _explain(error: ValidationError, raw: dict[str, Any], path: Path) -> str:
    lines = [f"{path}: the activation config is not valid:"]
    for item in error.errors():
        loc = list(item["loc"])
        # A missing or unknown key is about the mapping that should (not) hold it.
        place = _place(loc[:-1] if item["type"] in ("missing", "extra_forbidden") else loc, raw)
        lines.append(f"  - {place}: {_problem(item)}" if place else f"  - {_problem(item)}")
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
    if isinstance(document.get("engagement"), dict):  # checked once here, not again in every behavior
        try:
            EngagementConfig.model_validate(document["engagement"])
        except ValidationError as exc:
            raise ConfigError(_explain(exc, {}, path).replace(":\n  - ", ":\n  - engagement: ", 1)) from None
    behaviors = document.get("behaviors")
    if isinstance(behaviors, list):
        filled = []
        for entry in behaviors:
            if isinstance(entry, dict):
                entry = dict(entry)
                for key in ("timezone", "week_start", "engagement"):
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
    document = _warehouse_document(document, base, path)
    if isinstance(document.get("dbt"), dict):
        dbt = dict(document["dbt"])
        for key in ("project_dir", "profiles_dir"):
            if isinstance(dbt.get(key), str):
                dbt[key] = _resolve(base, dbt[key])
        document["dbt"] = dbt
    document["path"] = path
    try:
        config = ActivationConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, raw, path)) from None
    _require_dbt_project(config, path)
    return config


def _require_dbt_project(config: ActivationConfig, path: Path) -> None:
    """A `dbt_model:` source needs a `dbt:` project (which models it names is known only from the
    project's manifest, read when the definitions are built)."""
    wanted = [(i, b) for i, b in enumerate(config.behaviors) if b.source.dbt_model]
    if wanted and config.dbt is None:
        i, behavior = wanted[0]
        raise ConfigError(
            f"{path}: behaviors[{i}] ({behavior.name}) source.dbt_model: {behavior.source.dbt_model!r} needs a dbt"
            " project; add `dbt: {project_dir: PATH}` at the top level (relative to this file)")


class _Loader(yaml.SafeLoader):
    """YAML as written: a date-like value that is no real date (2025-13-01) stays text, so that
    validation can name it, instead of failing inside the YAML parser."""


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def load_config(path: str | Path | None = None) -> ActivationConfig:
    path = Path(path) if path else config_path_from_env()
    path = path.resolve()
    if not path.exists():
        raise ConfigError(
            f"config file {path} does not exist; pass --config PATH or set {CONFIG_ENV_VAR}"
        )
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, path)


def missing_source_files(config: ActivationConfig) -> list[str]:
    """Local file sources whose path or glob matches nothing, as readable lines (tables, and URLs
    that Spark reads, are checked at run time)."""
    problems = []
    sample = (config.base_dir / SAMPLE_DATA_DIR).resolve()
    for behavior in config.behaviors:
        source = behavior.source
        if source.kind == "table" or is_url(source.location):
            continue
        if not glob.glob(source.location, recursive=True):
            # A path where `activation sample-data` writes: the sample has not been generated yet.
            in_sample = Path(source.location).resolve().is_relative_to(sample)
            hint = "generate the sample data with `activation sample-data`, or fix the path" if in_sample else "fix the path"
            problems.append(
                f"behavior {behavior.name!r}: source {source.kind} {source.location!r} matches no file"
                f" ({hint}; relative paths are relative to the config file)"
            )
    return problems
