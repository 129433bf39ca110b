"""Engine-neutral work, no Dagster: reading sources, the steps that write partitions, what changed."""
