"""A snapshot of the generated graph: keys, groups, dependencies, partitions, policies, checks."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from activation_assets.config import parse_config
from activation_assets.orchestration.definitions import build_definitions

DATABASE_STEM = "memory"  # DuckDB's name for an in-memory database's catalog
CONFIG = {
    "database": ":memory:",
    "timezone": "Asia/Seoul",
    "behaviors": [
        {"name": "sold_item", "source": {"table": "sales"}, "start_date": "2025-01-15", "end_date": "2025-03-31"},
        {"name": "wrote_post", "source": {"table": "posts"}, "start_date": "2025-02-01", "end_date": "2025-02-28",
         "grains": ["weekly"], "timezone": "UTC", "week_start": "sunday", "owners": ["team:community"]},
    ],
}


@pytest.fixture(scope="module")
def graph():
    from pathlib import Path

    defs = build_definitions(parse_config(CONFIG, Path("/tmp/activation.yaml")), check_files=False)
    return defs.resolve_asset_graph()


MODELS = ("firstlast", "activation", "transitions", "growth", "cohorts", "distributions")


def _key(name: str) -> dg.AssetKey:
    return dg.AssetKey(name)


def test_keys_and_groups(graph):
    expected = {
        "sold_item": ["fact_sold_item"] + [f"sold_item_{m}_{g}" for g in ("daily", "weekly", "monthly")
                                           for m in MODELS]
        + [f"sold_item_{m}_daily" for m in ("engagement", "engagement_transitions", "stickiness")],
        "wrote_post": ["fact_wrote_post"] + [f"wrote_post_{m}_weekly" for m in MODELS],
    }
    actual: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        actual.setdefault(graph.get(key).group_name, []).append(key.to_user_string())
    assert {g: sorted(v) for g, v in actual.items()} == {g: sorted(v) for g, v in expected.items()}


def test_dependencies(graph):
    def parents(name):
        return sorted(k.to_user_string() for k in graph.get(_key(name)).parent_keys)

    assert parents("fact_sold_item") == []
    assert parents("sold_item_firstlast_weekly") == ["fact_sold_item", "sold_item_firstlast_weekly"]
    assert parents("sold_item_activation_weekly") == ["sold_item_activation_weekly", "sold_item_firstlast_weekly"]
    for model in ("transitions", "growth", "cohorts", "distributions"):
        assert parents(f"sold_item_{model}_weekly") == ["sold_item_activation_weekly"]
    for model in ("engagement_transitions", "stickiness"):  # the daily grain only
        assert parents(f"sold_item_{model}_daily") == ["sold_item_activation_daily"]
    assert parents("sold_item_engagement_daily") == ["sold_item_engagement_transitions_daily"]
    # Self-dependencies map to the previous partition, the fact to every day of the period.
    spec = {dep.asset_key.to_user_string(): dep for dep in graph.get(_key("sold_item_firstlast_weekly")).assets_def
            .specs_by_key[_key("sold_item_firstlast_weekly")].deps}
    own = spec["sold_item_firstlast_weekly"].partition_mapping
    assert (own.start_offset, own.end_offset) == (-1, -1)
    assert spec["fact_sold_item"].partition_mapping.allow_nonexistent_upstream_partitions


def test_partitions(graph):
    def keys(name):
        return graph.get(_key(name)).partitions_def.get_partition_keys()

    days = keys("fact_sold_item")
    assert days[0] == "2025-01-15" and days[-1] == "2025-03-31" and len(days) == 76
    assert keys("sold_item_firstlast_daily") == days
    # Monday weeks: the one containing 01-15 starts 01-13; the last complete one ends 03-30.
    weeks = keys("sold_item_activation_weekly")
    assert weeks[0] == "2025-01-13" and weeks[-1] == "2025-03-24" and len(weeks) == 11
    assert keys("sold_item_transitions_monthly") == ["2025-01-01", "2025-02-01", "2025-03-01"]
    # Sunday weeks in UTC for wrote_post: 02-01 is a Saturday, so the first week starts 01-26;
    # the week of 02-23 ends 03-01, after end_date, so the last is 02-16.
    assert keys("wrote_post_activation_weekly") == ["2025-01-26", "2025-02-02", "2025-02-09", "2025-02-16"]
    assert graph.get(_key("sold_item_activation_daily")).partitions_def.timezone == "Asia/Seoul"
    assert graph.get(_key("wrote_post_activation_weekly")).partitions_def.timezone == "UTC"


def test_policies_pools_kinds_and_checks(graph):
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
        assert node.pools == {"duckdb"}, key
        assert {"duckdb", "sql"} <= node.kinds, key
        assert node.description, key
        assert "dagster/column_schema" in node.metadata, key
        # The relation as Dagster names it (catalog.schema.table of the DuckDB file), and its kind.
        assert node.metadata["dagster/table_name"] == f"{DATABASE_STEM}.main.{key.path[-1]}", key
        assert node.kinds & {"table", "view"} == {"view" if "_activation_" in key.path[-1] else "table"}, key
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("sold_item_activation_daily", "one_row_per_user") in checks
    assert ("sold_item_activation_weekly", "matches_days") in checks
    assert ("sold_item_activation_daily", "matches_days") not in checks  # the daily grain is the days
    assert ("sold_item_transitions_monthly", "equals_grouped_activation") in checks
    assert ("sold_item_firstlast_daily", "nobody_disappears") in checks
    assert ("sold_item_growth_daily", "identities") in checks
    assert ("sold_item_cohorts_monthly", "cohort_sizes_stable") in checks
    assert graph.get(_key("wrote_post_activation_weekly")).owners == ["team:community"]
    assert graph.get(_key("wrote_post_activation_weekly")).tags["grain"] == "weekly"


def test_open_ended_behavior_stops_at_the_last_complete_period(graph):
    from activation_assets.config import parse_config
    from pathlib import Path

    today = dt.datetime.now(dt.timezone.utc).date()
    config = parse_config({"behaviors": [{"name": "live", "source": {"table": "t"},
                                          "start_date": (today - dt.timedelta(days=40)).isoformat()}]},
                          Path("/tmp/a.yaml"))
    defs = build_definitions(config, check_files=False)
    daily = defs.resolve_asset_graph().get(_key("live_activation_daily")).partitions_def.get_partition_keys()
    assert daily[-1] == (today - dt.timedelta(days=1)).isoformat()  # today (UTC) has not ended
