"""The activation layer as a Dagster Component (`dg`, `defs.yaml`).

    type: activation_assets.ActivationLayer
    attributes:            # exactly the keys of activation.yaml
      database: ...
      behaviors: [...]

The attributes are the keys of `activation.yaml` and nothing else; their values are checked by the
same validator (`config.parse_config`), with the same one-line messages, when the component builds
its definitions. Relative paths are relative to the folder of the `defs.yaml`, as they are relative
to `activation.yaml` in a config file.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from activation_assets.config import ActivationConfig, parse_config

COMPONENT_FILE = "defs.yaml"


class ActivationLayer(dg.Component, dg.Model, dg.Resolvable):
    """Every behavior's activation graph (fact, FirstLast, activation, transitions, growth, cohorts,
    distributions per grain, the rolling engagement on the daily grain), its checks and sensors.

    The attributes are activation.yaml's top-level keys; see the README's "Configuration"."""

    # The short form of `warehouse: {duckdb: {database, memory_limit}}`.
    database: str | None = None
    memory_limit: str | None = None
    warehouse: dict[str, Any] | None = None
    dbt: dict[str, Any] | None = None
    timezone: str | None = None
    week_start: str | None = None
    engagement: dict[str, Any] | None = None
    behaviors: list[dict[str, Any]]

    def activation_config(self, folder: Path) -> ActivationConfig:
        """The attributes validated as an activation.yaml in `folder` would be."""
        return parse_config(self.model_dump(exclude_none=True), folder / COMPONENT_FILE)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from activation_assets.orchestration.definitions import build_defs

        return build_defs(self.activation_config(context.path))
