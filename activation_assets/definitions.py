"""The code location `workspace.yaml` and `dagster dev -m activation_assets.definitions` load:
`activation.yaml` (or $ACTIVATION_CONFIG) in, every behavior's graph out."""

import dagster as dg

from activation_assets.config import load_config
from activation_assets.orchestration.definitions import build_defs


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily, so importing this module (as the CLI and tests do) reads no config."""
    return build_defs(load_config())
