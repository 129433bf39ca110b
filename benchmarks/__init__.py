"""Benchmarks of activation-assets; see harness.py and docs/benchmarks/harness.md."""
