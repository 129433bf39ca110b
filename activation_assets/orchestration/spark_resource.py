"""dagster-pyspark's lazy session (nothing starts until a step needs it), plus the database (schema)
that holds the activation tables and, for a local warehouse, its lock file."""

from dagster_pyspark import LazyPySparkResource


class SparkResource(LazyPySparkResource):
    database: str = "default"
    lock_file: str | None = None
