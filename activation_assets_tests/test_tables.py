"""Every relation's columns are written once (`activation_assets/tables.py`): the tables and views
DuckDB creates have exactly those columns, types and nullability, and docs/relations.md is generated
from the same lists. (Spark's side is in test_spark.py.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from activation_assets import tables
from activation_assets.config import Grain, load_config
from activation_assets.models import sql

from . import reference
from .conftest import edge_events, run_graph, small_behavior

SPEC = reference.Spec("Asia/Seoul", dt.date(2025, 3, 3), dt.date(2025, 4, 13), "monday")
ROOT = Path(__file__).resolve().parent.parent


def expected_columns(relation: tables.Relation, grain: Grain | None, source_types: dict[str, str],
                     segments=()) -> list[tuple]:
    """(name, type, nullable) as DuckDB should report them; a view does not know nullability. The
    per-user relations end with the segments' columns."""
    extra = tables.segment_columns(segments, relation)
    return [(c.name, source_types.get(c.type, c.type), True if relation.view else c.nullable)
            for c in (*relation.columns_for(grain), *extra)]


def described(conn, name: str, view: bool) -> list[tuple]:
    return [(row[0], row[1], True if view else row[2] == "YES") for row in conn.execute(f'DESCRIBE "{name}"').fetchall()]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    config_path = small_behavior(root, SPEC, edge_events(SPEC, seed=11, users=list(range(1, 40))),
                                 segments=[{"column": "platform"}])
    run_graph(config_path)
    return load_config(config_path)


def test_every_relation_duckdb_creates_has_the_columns_of_its_schema(graph):
    behavior = graph.behaviors[0]
    with duckdb.connect(graph.database, read_only=True) as conn:
        fact = described(conn, sql.fact_table(behavior.name), view=False)
        source_types = {tables.USER: dict((n, t) for n, t, _ in fact)["user_id"],
                        tables.SOURCE: dict((n, t) for n, t, _ in fact)["occurred_at"]}
        contract = expected_columns(tables.FACT, None, source_types)
        assert fact[:len(contract)] == contract  # the source's other columns follow
        for grain in behavior.grains:
            for relation in tables.per_grain(grain):
                name = relation.table(behavior.name, grain)
                assert described(conn, name, relation.view) == expected_columns(
                    relation, grain, source_types, behavior.segments), name
        for record in tables.RECORDS:
            assert described(conn, record.table(), False) == expected_columns(record, None, {}), record.table()


def test_a_record_created_by_an_earlier_version_gains_the_columns_it_lacks(tmp_path):
    """The partition log of the first version had three columns; the others are added, nullable."""
    from activation_assets.engines.duckdb import DuckDBWarehouse

    with duckdb.connect(str(tmp_path / "old.duckdb")) as conn:
        conn.execute(f"CREATE TABLE {sql.PARTITION_LOG} (table_name VARCHAR NOT NULL, period_start DATE NOT NULL,"
                     " row_count BIGINT NOT NULL, PRIMARY KEY (table_name, period_start))")
        conn.execute(f"INSERT INTO {sql.PARTITION_LOG} VALUES ('fact_a', DATE '2025-01-01', 3)")
        DuckDBWarehouse(conn).ensure_partition_log()
        assert described(conn, sql.PARTITION_LOG, False) == expected_columns(tables.PARTITIONS_RECORD, None, {})
        assert conn.execute(f"SELECT row_count, written_at FROM {sql.PARTITION_LOG}").fetchall() == [(3, None)]


def test_the_docs_page_of_the_relations_is_generated_from_the_schemas():
    page = (ROOT / "docs" / "relations.md").read_text()
    assert page == tables.markdown(), "docs/relations.md is stale: python -m activation_assets.tables > docs/relations.md"


def test_the_vocabularies_are_defined_once():
    """The state names every module uses are the ones `tables` defines (no module keeps its own copy)."""
    import re

    quoted = re.compile(r"""\(\s*"new",\s*"(retained|current)",""")
    copies = [p for p in (ROOT / "activation_assets").rglob("*.py")
              if p.name != "tables.py" and quoted.search(p.read_text())]
    assert copies == []
