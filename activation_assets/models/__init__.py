"""The layer's SQL: small pure functions that return DuckDB-dialect statements (no engine, no Dagster)."""
