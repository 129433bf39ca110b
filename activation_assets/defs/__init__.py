"""The project's `dg` defs folder: each subfolder's defs.yaml instantiates a component."""
