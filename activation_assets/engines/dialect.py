"""One SQL source, two engines: every statement is written once in DuckDB's dialect and rendered
for Spark by `sqlglot`.

sqlglot translates the syntax (quoting, types, `//`, `date_diff`, `string_agg`, ...). The one
construct it leaves alone is DuckDB's `timezone(zone, x)`, which means two different things:

    timezone(zone, <naive TIMESTAMP>)   the instant at which the zone's clock showed x
    timezone(zone, <TIMESTAMPTZ>)       the zone's wall-clock time at the instant x

Spark has a function for each (`to_utc_timestamp`, `from_utc_timestamp`) and no types to tell
them apart at parse time. The SQL in `sql.py` only ever passes an explicit `CAST(... AS TIMESTAMP)`
for the first meaning, which is what the rewrite below keys on.
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp

SOURCE_DIALECT = "duckdb"


def _timezones_for_spark(tree: exp.Expression) -> exp.Expression:
    calls = [node for node in tree.find_all(exp.Anonymous, bfs=False)
             if node.name.lower() == "timezone" and len(node.expressions) == 2]
    for node in reversed(calls):  # innermost first: timezone(zone, timezone('UTC', CAST(...)))
        zone, value = node.expressions
        naive = isinstance(value, exp.Cast) and value.to.this in (exp.DataType.Type.TIMESTAMP,
                                                                 exp.DataType.Type.TIMESTAMPNTZ)
        function = "to_utc_timestamp" if naive else "from_utc_timestamp"
        replacement = exp.Anonymous(this=function, expressions=[value.copy(), zone.copy()])
        if node is tree:
            return replacement
        node.replace(replacement)
    return tree


@functools.lru_cache(maxsize=4096)
def render(statement: str, engine: str) -> str:
    """`statement` (DuckDB SQL) as `engine` runs it."""
    if engine == "duckdb":
        return statement
    if engine != "spark":
        raise ValueError(f"unknown engine {engine!r}")
    tree = sqlglot.parse_one(statement, read=SOURCE_DIALECT)
    return _timezones_for_spark(tree).sql(dialect="spark")

