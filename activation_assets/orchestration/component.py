"""The activation layer as a Dagster Component (`dg`, `defs.yaml`).

    type: activation_assets.ActivationLayer
    attributes:
      config_file: "{{ context.project_root }}/activation.yaml"   # the settings of a config file, or
      behaviors: [...]                                              # the same keys written here

The attributes are typed by the config's own models (`config.py`), so `dg check yaml` checks them
and `dg utils inspect-component activation_assets.ActivationLayer` shows their schema; when the
component builds its definitions, the same validator as `activation.yaml`'s (`config.parse_config`)
checks what was written, with the same one-line messages. Relative paths are relative to the folder
of the `defs.yaml`, as they are relative to `activation.yaml` in a config file.
"""

import datetime as dt
import functools
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Union

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from activation_assets.config import (
    ActivationConfig, BehaviorConfig, ConfigError, DbtConfig, EngagementConfig, WarehouseConfig, load_config,
    parse_config,
)

COMPONENT_FILE = "defs.yaml"


def _as_written(annotation: Any) -> Any:
    """A config model's field type as YAML writes it, in the types `dg` resolves: dates as text,
    tuples as lists, nested models as their own documents."""
    if annotation is dt.date:
        return str
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return document_model(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        return list[_as_written(args[0])]
    if origin in (Union, types.UnionType):
        return Union[tuple(_as_written(a) for a in args)]  # noqa: UP007
    if origin is dict:
        return dict[str, _as_written(args[1])]
    return annotation


def _dates_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in value.items()}
    return value


@functools.cache
def document_model(model: type[BaseModel]) -> type[BaseModel]:
    """The YAML document of a config model: the same keys, required ones and descriptions, checked
    for unknown keys and types by `dg`; what the values mean is the config's validator's to say."""
    fields = {
        name: (_as_written(info.annotation), Field(... if info.is_required() else None, description=info.description))
        for name, info in model.model_fields.items() if name != "path"
    }
    return create_model(
        model.__name__, __config__=ConfigDict(extra="forbid"), __doc__=model.__doc__,
        __validators__={"dates_as_text": model_validator(mode="before")(lambda cls, value: _dates_as_text(value))},
        **fields)


class ActivationLayer(dg.Component, dg.Model, dg.Resolvable):
    """Every behavior's activation graph (fact, FirstLast, activation, transitions, growth, cohorts,
    distributions per grain, the rolling engagement on the daily grain), its checks and sensors.

    Either `config_file` (an activation.yaml) or the keys of one, written here (docs/configuration.md)."""

    config_file: str | None = Field(None, description="An activation.yaml whose settings to use, instead of"
                                    " writing them here (relative to this folder).")
    database: str | None = Field(None, description="Short for `warehouse: {duckdb: {database: PATH}}`.")
    memory_limit: str | None = Field(None, description="Short for `warehouse: {duckdb: {memory_limit: ...}}`.")
    warehouse: document_model(WarehouseConfig) | None = Field(  # type: ignore[valid-type]
        None, description="Exactly one of `duckdb:` or `spark:`.")
    dbt: document_model(DbtConfig) | None = Field(  # type: ignore[valid-type]
        None, description="The dbt project whose models behaviors read.")
    timezone: str | None = Field(None, description="Every behavior's default timezone (IANA name; UTC).")
    week_start: str | None = Field(None, description="Every behavior's default first day of a week (monday).")
    engagement: document_model(EngagementConfig) | None = Field(  # type: ignore[valid-type]
        None, description="Every behavior's default engagement windows.")
    behaviors: list[document_model(BehaviorConfig)] | None = Field(  # type: ignore[valid-type]
        None, description="The behaviors, each its own graph.")

    def activation_config(self, folder: Path) -> ActivationConfig:
        """The attributes validated as an activation.yaml in `folder` would be."""
        written = self.model_dump(exclude_unset=True, exclude_none=True, mode="json")
        config_file = written.pop("config_file", None)
        if config_file is not None:
            if written:
                raise ConfigError(f"{folder / COMPONENT_FILE}: `config_file` is given, so the other attributes"
                                  f" ({', '.join(written)}) belong in {config_file}; write them in one place")
            return load_config(folder / config_file)
        return parse_config(written, folder / COMPONENT_FILE)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from activation_assets.orchestration.definitions import build_defs

        return build_defs(self.activation_config(context.path))
