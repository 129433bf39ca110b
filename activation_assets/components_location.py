"""The code location `dg` loads (`dg dev`, `dg list defs`): the defs folder, where the activation
layer is a Component (`defs/activation_layer/defs.yaml`). `dagster dev -w workspace.yaml` loads
`definitions.py` (activation.yaml) instead; both give the same graph."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
