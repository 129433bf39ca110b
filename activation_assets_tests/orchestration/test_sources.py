"""Facts where they live: an upstream Dagster asset or a dbt model as a behavior's source, and the
layer as a Dagster Component (`defs.yaml`, `dg`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from activation_assets import cli
from activation_assets.config import ConfigError, load_config, parse_config
from activation_assets.orchestration.definitions import build_definitions

from .. import reference
from ..conftest import ACTIVATION_COLUMNS, as_set, edge_events, python_bin, table_rows, write_config

ROOT = Path(__file__).resolve().parents[2]
SPEC = reference.Spec("Asia/Seoul", dt.date(2025, 1, 8), dt.date(2025, 2, 21), "monday")
GRAINS = ["daily", "weekly", "monthly"]


def _key(text: str) -> dg.AssetKey:
    return dg.AssetKey(text.split("/"))


# --- definitions: the lineage edge ------------------------------------------------------------------


def test_a_dbt_model_source_is_upstream_of_its_fact_in_the_bundled_config():
    from activation_assets import build_defs

    from activation_assets.orchestration.dbt import with_dbt_models

    config = with_dbt_models(load_config(ROOT / "activation.yaml"))
    source = config.behavior("visited_app").source
    assert source.dbt_model == "fct_app_opens" and source.location == "main.fct_app_opens"
    graph = build_defs(config, check_files=False).resolve_asset_graph()
    # raw files -> staging -> fact models -> the activation graph
    assert graph.get(_key("fact_visited_app")).parent_keys == {_key("fct_app_opens")}
    assert graph.get(_key("fact_wrote_post")).parent_keys == {_key("fct_posts_written")}
    assert _key("stg_events") in graph.get(_key("fct_app_opens")).parent_keys
    assert _key("raw/events") in graph.get(_key("stg_events")).parent_keys
    assert _key("visited_app_firstlast_daily") in graph.get(_key("fact_visited_app")).child_keys


def _asset_config(tmp_path: Path, **source) -> Path:
    return write_config(tmp_path, [{"name": "visited", "source": {"asset": "lake/visits", **source},
                                    "start_date": "2025-01-01", "end_date": "2025-01-31", "timezone": "Asia/Seoul"}])


@pytest.mark.parametrize(("upstream_zone", "mapping"), [
    ("Asia/Seoul", dg.TimeWindowPartitionMapping), ("UTC", dg.AllPartitionMapping)])
def test_an_upstream_asset_maps_day_to_day_only_in_the_same_timezone(tmp_path, upstream_zone, mapping):
    from activation_assets import build_defs

    config = load_config(_asset_config(tmp_path, table="visits_table"))
    assert config.behaviors[0].source.location == "visits_table"  # `table:` names the relation
    upstream = dg.AssetSpec(_key("lake/visits"), partitions_def=dg.DailyPartitionsDefinition(
        "2024-12-01", timezone=upstream_zone))
    defs = dg.Definitions.merge(dg.Definitions(assets=[upstream]), build_defs(config, upstream=[upstream]))
    graph = defs.resolve_asset_graph()
    assert graph.get(_key("fact_visited")).parent_keys == {_key("lake/visits")}
    assert isinstance(graph.get_partition_mapping(_key("fact_visited"), _key("lake/visits")), mapping)


def test_source_errors_name_the_key_and_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_config({"behaviors": [{"name": "a", "source": {"asset": "x", "parquet": "y"},
                                     "start_date": "2025-01-01"}]}, tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"source.dbt_model: 'fct_x' needs a dbt project; add `dbt:"):
        parse_config({"behaviors": [{"name": "a", "source": {"dbt_model": "fct_x"},
                                     "start_date": "2025-01-01"}]}, tmp_path / "a.yaml")
    from activation_assets.orchestration.dbt import with_dbt_models

    config = parse_config({"dbt": {"project_dir": str(ROOT / "dbt_project")},
                           "behaviors": [{"name": "a", "source": {"dbt_model": "fct_x"}, "start_date": "2025-01-01"}]},
                          tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"no dbt model named 'fct_x' .*its models: fct_app_opens"):
        with_dbt_models(config)


def test_parsing_a_config_reads_no_dbt_project(tmp_path):
    """Parsing is pure: a dbt project that does not exist is only found out when the models are resolved."""
    from activation_assets.orchestration.dbt import with_dbt_models

    config = parse_config({"dbt": {"project_dir": "no_such_project"}, "behaviors": [
        {"name": "a", "source": {"dbt_model": "fct_x"}, "start_date": "2025-01-01"}]}, tmp_path / "a.yaml")
    assert config.behaviors[0].source.asset is None and not (tmp_path / "no_such_project").exists()
    with pytest.raises(ConfigError, match=r"behaviors\[0\] \(a\) source.dbt_model: .*no_such_project is not a dbt project"):
        with_dbt_models(config)


# --- dbt, then the activation graph: the tables equal the reference ---------------------------------


def _raw_sample(directory: Path) -> tuple[list[tuple], list[tuple]]:
    """Raw files in the bundled dbt project's layout (data/raw under the config's folder)."""
    opens = edge_events(SPEC, seed=3, users=list(range(1, 30)))
    posts = edge_events(SPEC, seed=5, users=[f"u{i:03d}" for i in range(1, 20)])
    raw = directory / "data" / "raw"
    (raw / "events").mkdir(parents=True)
    noise = [(u, t) for u, t in opens[:40]]  # item_listed rows: another behavior's, filtered out by dbt
    events = pd.DataFrame({
        "event_id": range(len(opens) + len(noise)),
        "user_id": pd.array([u for u, _ in opens + noise], dtype="Int64"),
        "event_name": ["app_open"] * len(opens) + ["item_listed"] * len(noise),
        "occurred_at": pd.to_datetime([None if t is None else t.replace(tzinfo=None) for _, t in opens + noise]),
        "platform": "ios",
        "country": "KR",  # the bundled raw layout carries both of the sample's segment columns
    })
    events.to_parquet(raw / "events" / "2025-01.parquet", index=False)
    pd.DataFrame({
        "post_id": range(len(posts)), "author_id": [u for u, _ in posts],
        "created_at": [None if t is None else t.isoformat() for _, t in posts], "board": "general",
    }).to_csv(raw / "community_posts.csv", index=False)
    return opens, posts


@pytest.mark.slow
def test_dbt_then_the_activation_graph_equals_the_reference(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "dbt_project", tmp_path / "dbt_project", ignore=shutil.ignore_patterns("target", "logs"))
    opens, posts = _raw_sample(tmp_path)
    window = {"start_date": SPEC.start_date, "end_date": SPEC.end_date, "timezone": SPEC.timezone}
    config = write_config(tmp_path, [
        {"name": "visited_app", "source": {"dbt_model": "fct_app_opens"}, **window},
        {"name": "wrote_post", "source": {"dbt_model": "fct_posts_written"}, **window},
    ], dbt={"project_dir": "dbt_project"})
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli.main(["materialize", "--config", str(config)]) == 0

    database = tmp_path / "warehouse.duckdb"
    for behavior, rows in (("visited_app", opens), ("wrote_post", posts)):
        for grain in GRAINS:
            expected = reference.activation(rows, SPEC, grain)
            actual = table_rows(database, f"{behavior}_activation_{grain}")
            assert len(actual) == len(expected), (behavior, grain)
            assert as_set(actual, ACTIVATION_COLUMNS) == as_set(expected, ACTIVATION_COLUMNS), (behavior, grain)
    # dbt ran through Dagster (the UI shows the fact models materialized), and wrote its tables into
    # the layer's warehouse, not the bundled one.
    instance = dg.DagsterInstance.get()
    assert instance.get_latest_materialization_event(_key("fct_app_opens")) is not None
    checks = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(_key("fct_app_opens"), "unique_fct_app_opens_event_id"), limit=1)
    assert checks and checks[0].status.value == "SUCCEEDED"
    with duckdb.connect(str(database), read_only=True) as conn:
        # each raw row has its own event_id: the fact model drops only rows without a user or time
        assert conn.execute("SELECT count(*) FROM main.fct_app_opens").fetchone()[0] == sum(
            1 for u, t in opens if u is not None and t is not None)

    # The bundled mart reads the layer back (the `activation` source) and is built after it; the
    # lineage runs from the layer's asset into it.
    with duckdb.connect(str(database), read_only=True) as conn:
        mart = conn.execute("SELECT week, active, churned FROM mart_app_weekly_growth ORDER BY week").fetchall()
    growth = reference.classic_growth(opens, SPEC, "weekly")
    assert mart == [(r["period_start"], r["active"], r["churned"]) for r in growth]
    graph = build_definitions(load_config(config)).resolve_asset_graph()
    assert {"visited_app_growth_weekly", "visited_app_engagement_daily"} == {
        k.to_user_string() for k in graph.get(_key("mart_app_weekly_growth")).parent_keys}

    # Again with nothing changed: dbt is not rebuilt. A raw file touched: it is.
    def builds() -> int:
        return len(instance.fetch_materializations(_key("fct_app_opens"), limit=100).records)

    assert cli.main(["materialize", "--config", str(config)]) == 0
    assert builds() == 1
    raw = next((tmp_path / "data" / "raw").rglob("*.csv"))
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    assert cli.main(["materialize", "--config", str(config)]) == 0
    assert builds() == 2


# --- automation: a re-materialized upstream asset brings its fact's affected days up to date ------------


def _upstream_asset(rows: list[tuple]):
    @dg.asset(key=_key("lake/visits"), required_resource_keys={"warehouse"})
    def visits(context):
        frame = pd.DataFrame({"user_id": [u for u, _ in rows], "occurred_at": [t for _, t in rows]})
        with context.resources.warehouse.get_connection() as conn:
            conn.register("incoming", frame)
            conn.execute("CREATE OR REPLACE TABLE visits AS SELECT user_id, CAST(occurred_at AS TIMESTAMP)"
                         " AS occurred_at FROM incoming")
    return visits


def _day(day: int, hour: int = 3) -> dt.datetime:
    return dt.datetime(2025, 1, day, hour)  # naive UTC: 12:00 in Seoul, the same local day


@pytest.mark.slow
def test_the_source_changes_sensor_follows_a_rematerialized_upstream_asset(tmp_path, monkeypatch):
    from activation_assets import build_defs
    from activation_assets.orchestration.sensors import SENSOR_NAME

    rows = [(u, _day(d)) for u in range(1, 8) for d in range(1, 21) if (u + d) % 3]
    config_path = _asset_config(tmp_path)
    config = load_config(config_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    instance = dg.DagsterInstance.get()

    def definitions(upstream_rows):
        upstream = _upstream_asset(upstream_rows)
        return dg.Definitions.merge(dg.Definitions(assets=[upstream]), build_defs(config, upstream=[upstream]))

    def tick(defs, cursor):
        sensor = defs.resolve_sensor_def(SENSOR_NAME)
        with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                     resources=dict(defs.resources)) as context:
            result = sensor.evaluate_tick(context)
        return result, result.cursor

    defs = definitions(rows)
    assert dg.materialize([defs.resolve_assets_def(_key("lake/visits"))], instance=instance).success
    assert cli.main(["materialize", "--config", str(config_path)]) == 0  # the whole graph, current
    result, cursor = tick(defs, None)
    assert not result.run_requests  # first look: every fact day matches its source

    # The relation changes without a new materialization of the upstream asset: the sensor does not
    # read the source again (that costs a grouped pass over a table) until the asset is materialized.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("INSERT INTO visits VALUES (99, TIMESTAMP '2025-01-05 03:00:00')")
    result, cursor = tick(defs, cursor)
    assert not result.run_requests

    late = rows + [(42, _day(9)), (43, _day(9, 20))]  # 20:00 UTC is Jan 10 in Seoul
    defs = definitions(late)
    assert dg.materialize([defs.resolve_assets_def(_key("lake/visits"))], instance=instance).success
    result, cursor = tick(defs, cursor)
    (request,) = result.run_requests
    subset = request.asset_graph_subset.partitions_subsets_by_asset_key
    # The fact days whose rows changed, and every later partition of each grain from the period
    # that holds the first of them (users 42 and 43 are new there and stay in every later stock).
    assert sorted(subset[_key("fact_visited")].get_partition_keys()) == ["2025-01-09", "2025-01-10"]
    assert sorted(subset[_key("visited_firstlast_daily")].get_partition_keys()) == [
        f"2025-01-{d:02d}" for d in range(9, 32)]
    assert sorted(subset[_key("visited_activation_weekly")].get_partition_keys()) == [
        "2025-01-06", "2025-01-13", "2025-01-20"]  # the week of Jan 27 ends after Jan 31: not complete
    result, cursor = tick(defs, cursor)  # the same request is not launched twice
    assert not result.run_requests


# --- the layer as a Component ---------------------------------------------------------------------


def _bundled_component_attributes() -> dict:
    text = (ROOT / "activation_assets" / "defs" / "activation_layer" / "defs.yaml").read_text()
    document = yaml.safe_load(text.replace("{{ context.project_root }}", str(ROOT)))
    assert document["type"] == "activation_assets.ActivationLayer"
    return document["attributes"]


def _inline_attributes() -> dict:
    """The bundled config's keys, written as the component's attributes."""
    return yaml.safe_load((ROOT / "activation.yaml").read_text())


def test_the_component_attributes_are_the_config_keys_and_typed_by_the_config_models():
    from activation_assets import ActivationLayer
    from activation_assets.config import ActivationConfig, BehaviorConfig

    config_keys = (set(ActivationConfig.model_fields) - {"path"}) | {"database", "memory_limit", "config_file"}
    assert set(ActivationLayer.model_fields) == config_keys
    schema = ActivationLayer.get_model_cls().model_json_schema()  # what `dg` shows and checks
    behavior = schema["$defs"]["BehaviorConfig"]
    assert set(behavior["properties"]) == set(BehaviorConfig.model_fields)
    assert behavior["additionalProperties"] is False and {"name", "source", "start_date"} <= set(behavior["required"])


def test_the_bundled_component_reads_the_bundled_config():
    from activation_assets import ActivationLayer

    folder = ROOT / "activation_assets" / "defs" / "activation_layer"
    component = ActivationLayer.model_validate(_bundled_component_attributes()).activation_config(folder)
    bundled = load_config(ROOT / "activation.yaml")
    assert component.model_dump(exclude={"path"}) == bundled.model_dump(exclude={"path"})


def test_attributes_written_in_the_component_give_the_config_of_the_same_keys(tmp_path):
    from activation_assets import ActivationLayer

    attributes = _inline_attributes()
    attributes["dbt"]["project_dir"] = str(ROOT / "dbt_project")
    attributes["database"] = str(ROOT / "data" / "activation.duckdb")
    component = ActivationLayer.model_validate(attributes).activation_config(tmp_path)
    bundled = load_config(ROOT / "activation.yaml")
    assert component.model_dump(exclude={"path"}) == bundled.model_dump(exclude={"path"})
    with pytest.raises(ConfigError, match="`config_file` is given, so the other attributes"):
        ActivationLayer.model_validate({**attributes, "config_file": "activation.yaml"}).activation_config(tmp_path)


def test_segments_are_component_attributes_with_values_as_the_column_writes_them(tmp_path):
    """The bundled config's segments, and `values:` of an integer column written as integers."""
    from activation_assets import ActivationLayer

    attributes = _inline_attributes()
    assert attributes["behaviors"][0]["segments"]
    attributes["behaviors"][0]["segments"].append({"name": "plan", "column": "tier", "values": [1, 2]})
    attributes["dbt"]["project_dir"] = str(ROOT / "dbt_project")
    behavior = ActivationLayer.model_validate(attributes).activation_config(tmp_path).behaviors[0]
    assert [(s.key, s.column, s.values) for s in behavior.segments][-1] == ("plan", "tier", ("1", "2"))
    attributes["behaviors"][0]["segments"][-1]["maximum"] = 3
    with pytest.raises(Exception, match="maximum"):
        ActivationLayer.model_validate(attributes)


def test_the_component_reports_a_bad_attribute_with_the_config_message(tmp_path):
    from activation_assets import ActivationLayer

    attributes = _inline_attributes()
    attributes["behaviors"][0]["end_date"] = "2024-01-01"  # before start_date
    with pytest.raises(ConfigError, match=r"(?s)defs.yaml: .*behaviors\[0\] \(visited_app\): end_date 2024-01-01 is before start_date 2025-01-01"):
        ActivationLayer.model_validate(attributes).activation_config(tmp_path)
    attributes = _inline_attributes()
    attributes["timezone"] = "Mars/Olympus"  # a top-level default: checked by the config's validator
    with pytest.raises(ConfigError, match=r"defs.yaml: unknown timezone 'Mars/Olympus'"):
        ActivationLayer.model_validate(attributes).activation_config(tmp_path)


@pytest.mark.slow
def test_dg_checks_and_lists_the_component_with_the_graph_of_workspace_yaml():
    from activation_assets import build_defs

    env = {**os.environ, "PATH": f"{python_bin()}{os.pathsep}{os.environ['PATH']}"}
    check = subprocess.run(["dg", "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run(["dg", "list", "defs", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr
    keys = {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
    workspace = build_defs(load_config(ROOT / "activation.yaml"), check_files=False).resolve_asset_graph()
    assert keys == {k.to_user_string() for k in workspace.get_all_asset_keys()}


# --- the whole lineage in the UI ----------------------------------------------------------------------


@pytest.mark.ui
@pytest.mark.slow
def test_the_lineage_runs_from_the_raw_files_through_dbt_into_the_activation_graph_in_a_browser(tmp_path):
    """The bundled config in `dagster dev`: raw sources -> dbt staging -> fact models -> fact_<b> -> ..."""
    from playwright.sync_api import sync_playwright

    from ..dagster_dev import DagsterDev
    from .test_ui import CHROMIUM, CHROMIUM_ARGS, _dismiss_popups

    shots = Path(os.environ.get("ACTIVATION_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    dev = DagsterDev(ROOT / "activation.yaml", tmp_path / "home", tmp_path / "dagster_dev.log").start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # Tall enough for the three groups expanded (the visited_app group alone is 38 assets), each
            # node drawn with its name.
            page = browser.new_page(viewport={"width": 3600, "height": 4800})
            try:
                page.goto(f"{dev.url}/asset-groups")
                _dismiss_popups(page)
                page.locator(".CodeMirror").first.click()
                page.keyboard.type('group:"raw" or group:"dbt" or group:"visited_app"')
                page.keyboard.press("Enter")
                page.wait_for_timeout(2000)
                page.mouse.click(1800, 4740)  # focus the graph, then its shortcut: expand all groups
                page.keyboard.press("Alt+KeyE")
                page.get_by_text("fct_app_opens", exact=True).first.wait_for(timeout=60_000)
                page.wait_for_timeout(2000)
                body = page.inner_text("body")
                for name in ("events", "stg_events", "fct_app_opens", "fact_visited_app",
                             "visited_app_firstlast_daily", "visited_app_activation_weekly"):
                    assert name in body, f"{name} is not in the lineage graph"
                assert page.locator("svg path").count() >= 25  # the edges are drawn
                page.screenshot(path=str(shots / "lineage_dbt.png"))
            finally:
                browser.close()
    finally:
        dev.stop()


def test_the_bundled_dbt_project_names_the_layer_as_activation_would():
    """The bundled project's sources of the layer are `activation dbt-sources` of the bundled config."""
    from activation_assets.orchestration.dbt import layer_sources_yaml

    shipped = ROOT / "dbt_project" / "models" / "marts" / "_activation_sources.yml"
    assert shipped.read_text() == layer_sources_yaml(load_config(ROOT / "activation.yaml"))
