"""The Dagster shell: the asset factory, partitions, sensors, dbt, the Component and `build_defs`."""
