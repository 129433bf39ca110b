"""The UI path, end to end: a real `dagster dev` (webserver + daemon), driven over GraphQL as the UI
drives it — backfills, late data and staleness, automation, failure and re-execution."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from activation_assets import cli
from activation_assets.config import load_config
from activation_assets.orchestration.definitions import build_definitions
from activation_assets.engines.duckdb import connect_database

from .. import reference
from ..conftest import (
    edge_events, local_instant, run_graph, write_config, write_csv_source, write_parquet_source,
)
from ..dagster_dev import DagsterDev

pytestmark = [pytest.mark.slow, pytest.mark.ui]

SEOUL = reference.Spec("Asia/Seoul", dt.date(2025, 3, 3), dt.date(2025, 4, 13), "monday")
UTC = reference.Spec("UTC", dt.date(2025, 3, 1), dt.date(2025, 4, 13), "monday")
LONG = reference.Spec("UTC", dt.date(2025, 1, 1), dt.date(2025, 4, 30), "monday")
TIMINGS: dict[str, float] = {}


def _behaviors(directory: Path) -> list[dict]:
    return [
        {"name": "visited", "source": {"parquet": "events/*.parquet", "where": "event_name = 'visit'"},
         "user_column": "uid", "time_column": "ts", "start_date": SEOUL.start_date, "end_date": SEOUL.end_date,
         "timezone": SEOUL.timezone, "growth_model": {"window_days": 7, "horizon_days": 14}},
        {"name": "posted", "source": {"csv": "posts.csv"}, "user_column": "author", "time_column": "created",
         "start_date": UTC.start_date, "end_date": UTC.end_date, "timezone": UTC.timezone},
        {"name": "corrected", "source": {"parquet": "corrected/*.parquet", "where": "event_name = 'visit'"},
         "user_column": "uid", "time_column": "ts", "start_date": LONG.start_date, "end_date": LONG.end_date,
         "timezone": LONG.timezone},
        {"name": "fragile", "source": {"parquet": "fragile/*.parquet", "where": "event_name = 'visit'"},
         "user_column": "uid", "time_column": "ts", "start_date": UTC.start_date, "end_date": UTC.end_date,
         "timezone": UTC.timezone, "grains": ["monthly"]},
    ]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ui")
    visited = edge_events(SEOUL, seed=61, users=list(range(1, 30)))
    posted = edge_events(UTC, seed=62, users=[f"p{i}" for i in range(1, 20)])
    fragile = edge_events(UTC, seed=63, users=list(range(1, 10)))
    write_parquet_source(directory / "events" / "part-1.parquet", visited)
    write_csv_source(directory / "posts.csv", posted, "UTC")
    write_parquet_source(directory / "fragile" / "good.parquet", fragile)
    corrected = [r for r in edge_events(LONG, seed=64, users=list(range(1, 9))) if r[1] is not None]
    _write_months(directory, corrected)
    (directory / "fragile" / "broken.parquet").write_bytes(b"this file was cut off in transfer")
    config = write_config(directory, _behaviors(directory))
    dev = DagsterDev(config, directory / "dagster_home", directory / "dagster_dev.log").start()
    state = {"dir": directory, "config": config, "dev": dev, "visited": visited, "posted": posted,
             "fragile": fragile, "corrected": corrected}
    yield state
    dev.stop()
    assert dev.process.poll() is not None


def _keys(config: Path, behaviors: tuple[str, ...]) -> list[str]:
    defs = build_definitions(load_config(config))
    return [k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
            if any(k.to_user_string().startswith(b) or k.to_user_string() == f"fact_{b}" for b in behaviors)]


def _tables(database: Path | str, prefix: tuple[str, ...]) -> dict[str, list[str]]:
    with connect_database(str(database), read_only=True) as conn:
        names = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
                 if r[0].startswith(prefix) or r[0].removeprefix("fact_").startswith(prefix)]
        return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"').fetchall())) for t in names}


def _fresh_cli_tables(ui, behaviors: tuple[str, ...]) -> dict[str, list[str]]:
    """What `activation materialize` makes of the same sources, in a database of its own."""
    directory = ui["dir"]
    fresh = directory / f"fresh_{time.monotonic_ns()}.yaml"
    fresh.write_text(ui["config"].read_text().replace("warehouse.duckdb", f"{fresh.stem}.duckdb"))
    assert run_graph(fresh, behaviors=list(behaviors)) == 0
    return _tables(directory / f"{fresh.stem}.duckdb", behaviors)


def test_every_check_is_executable_alone_in_the_ui(ui):
    """What enables the Checks tab's *Execute*: each check runs without materializing its asset."""
    for key in ("visited_firstlast_daily", "visited_activation_weekly", "visited_engagement_daily"):
        node = ui["dev"].graphql(
            """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
                assetChecksOrError { ... on AssetChecks { checks { name canExecuteIndividually } } } } } }""",
            {"key": {"path": [key]}})["assetNodeOrError"]
        checks = node["assetChecksOrError"]["checks"]
        assert checks and {c["canExecuteIndividually"] for c in checks} == {"CAN_EXECUTE"}, key


def test_backfill_of_everything_from_the_ui(ui):
    dev = ui["dev"]
    keys = _keys(ui["config"], ("visited", "posted"))
    began = time.monotonic()
    backfill = dev.wait_for_backfill(dev.backfill_all(keys))
    TIMINGS["backfill"] = time.monotonic() - began
    assert backfill["status"] == "COMPLETED_SUCCESS"
    graph = build_definitions(load_config(ui["config"])).resolve_asset_graph()
    partitions = sum(len(graph.get(dg.AssetKey(k)).partitions_def.get_partition_keys()) for k in keys)
    runs = backfill["runs"]
    print(f"UI backfill: {len(keys)} assets, {partitions} asset partitions, {len(runs)} runs,"
          f" {TIMINGS['backfill']:.0f} s")
    assert all(r["status"] == "SUCCESS" for r in runs)
    assert len(runs) <= len(keys) < partitions / 10  # a handful of runs, not one per partition
    log = (ui["dir"] / "dagster_dev.log").read_text()
    assert "Could not set lock" not in log and "Conflicting lock" not in log
    assert _tables(ui["dir"] / "warehouse.duckdb", ("visited", "posted")) == _fresh_cli_tables(ui, ("visited", "posted"))


def test_every_asset_plots_numbers_for_its_last_partitions(ui):
    """What the Plots tab of each partitioned asset charts, asked as the UI asks: its last 120
    partitions, newest first, none after the last (the windows ended in 2025), each with a number."""
    ui["dev"].reload_location()  # loaded today: the test may run after a midnight the fixture did not
    graph = build_definitions(load_config(ui["config"])).resolve_asset_graph()
    for key in _keys(ui["config"], ("visited", "posted")):
        path = {"path": [key]}
        plotted = ui["dev"].graphql(
            """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
                partitionKeyConnection(limit: 120, ascending: false) { results } } } }""",
            {"key": path})["assetNodeOrError"]["partitionKeyConnection"]["results"]
        assert plotted == graph.get(dg.AssetKey(key)).partitions_def.get_partition_keys()[::-1][:120], key
        events = ui["dev"].graphql(
            """query($key: AssetKeyInput!, $partitions: [String!]!) { assetNodeOrError(assetKey: $key) {
                ... on AssetNode { latestMaterializationByPartition(partitions: $partitions) {
                    partition metadataEntries { __typename } } } } }""",
            {"key": path, "partitions": plotted})["assetNodeOrError"]["latestMaterializationByPartition"]
        numbers = {e["partition"] for e in events if e and {m["__typename"] for m in e["metadataEntries"]}
                   & {"IntMetadataEntry", "FloatMetadataEntry"}}
        assert numbers == set(plotted), (key, sorted(set(plotted) - numbers)[:5])


def _late_rows(ui, day: dt.date, users: list) -> None:
    late = [(u, local_instant(day, 3600 * (i + 1), SEOUL.timezone)) for i, u in enumerate(users)]
    ui["visited"] = ui["visited"] + late
    write_parquet_source(ui["dir"] / "events" / f"late-{day}.parquet", late)


def _downstream_ranges(ui, day: dt.date) -> dict[str, tuple[str, str]]:
    graph = build_definitions(load_config(ui["config"])).resolve_asset_graph()
    ranges = {}
    for key in _keys(ui["config"], ("visited",)):
        if key.startswith("fact_"):
            continue
        partitions = graph.get(dg.AssetKey(key)).partitions_def.get_partition_keys()
        later = [p for p in partitions if dt.date.fromisoformat(p) + _length(key, p) > day]
        ranges[key] = (later[0], partitions[-1])
    return ranges


def _length(key: str, partition: str) -> dt.timedelta:
    start = dt.date.fromisoformat(partition)
    if key.endswith("_daily"):
        return dt.timedelta(days=1)
    if key.endswith("_weekly"):
        return dt.timedelta(days=7)
    following = dt.date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return following - start


def test_late_data_makes_later_partitions_stale_and_one_backfill_fixes_them(ui):
    dev, day = ui["dev"], dt.date(2025, 3, 20)
    # Per grain: a partition before the corrected day's period, and the one that reads the day.
    probes = {"visited_firstlast_daily": ["2025-03-19", "2025-03-20"],
              "visited_firstlast_weekly": ["2025-03-10", "2025-03-17"]}
    before = {key: dev.stale_status(key, partitions)[0] for key, partitions in probes.items()}
    _late_rows(ui, day, [3, 4, 777])
    assert dev.wait_for_backfill(dev.backfill_ranges({"fact_visited": (str(day), str(day))}))["status"] == \
        "COMPLETED_SUCCESS"
    # Dagster's own staleness is one hop (1.13): the partitions that read the corrected day directly
    # turn stale, in every grain; the ones before keep the status they had. (Later partitions read it
    # through their predecessors, which Dagster does not follow; the backfill below, or the automation
    # sensor, does.) That status is FRESH unless the daemon split the first backfill of a
    # self-dependent asset: it may launch a range run on the partitions whose parents' events it has
    # seen so far, and a range run can leave the later partitions of its range marked stale.
    for key, partitions in probes.items():
        assert dev.stale_status(key, partitions) == [before[key], "STALE"], key
    assert dev.stale_status("visited_firstlast_monthly", ["2025-03-01"]) == ["STALE"]
    ranges = _downstream_ranges(ui, day)
    backfill = dev.wait_for_backfill(dev.backfill_ranges(ranges))
    assert backfill["status"] == "COMPLETED_SUCCESS"
    # The partitions that read the corrected day are fresh again (the first of each re-run range).
    for key, partitions in probes.items():
        assert dev.stale_status(key, partitions) == [before[key], "FRESH"], key
    assert _tables(ui["dir"] / "warehouse.duckdb", ("visited",)) == _fresh_cli_tables(ui, ("visited",))


def test_the_automation_sensor_propagates_a_late_correction(ui):
    # A correction near the end: a self-dependent chain advances one partition per sensor tick.
    dev, day = ui["dev"], dt.date(2025, 4, 10)
    dev.set_sensor("activation_automation", running=True)
    try:
        time.sleep(15)  # let the sensor take its first look at a settled graph
        _late_rows(ui, day, [5, 888])
        assert dev.wait_for_backfill(dev.backfill_ranges({"fact_visited": (str(day), str(day))}))["status"] == \
            "COMPLETED_SUCCESS"
        expected = _fresh_cli_tables(ui, ("visited",))
        _wait_for(lambda: _tables(ui["dir"] / "warehouse.duckdb", ("visited",)) == expected and dev.stale_status(
            "visited_distributions_daily", ["2025-04-13"]) == ["FRESH"], 480,
            "the automation sensor did not propagate the correction")
    finally:
        dev.set_sensor("activation_automation", running=False)


def _wait_for(done, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(10)
    pytest.fail(f"{failure} within {seconds / 60:.0f} minutes")


def _write_months(directory: Path, rows: list[tuple]) -> None:
    for month in (1, 2, 3, 4):
        write_parquet_source(directory / "corrected" / f"2025-{month:02}.parquet",
                             [r for r in rows if r[1] is not None and r[1].month == month])


def test_the_source_changes_sensor_propagates_a_correction_far_back_in_one_backfill(ui, monkeypatch):
    """A correction 100 days before the end: the sensor finds the day itself and launches one backfill
    (one run per asset), instead of the automation's one period per tick."""
    dev, directory, config = ui["dev"], ui["dir"], ui["config"]
    rows = ui["corrected"]
    monkeypatch.setenv("DAGSTER_HOME", str(dev.home))
    assert cli.main(["materialize", "--config", str(config), "--behavior", "corrected"]) == 0
    day = LONG.end_date - dt.timedelta(days=100)
    corrected = rows + [(u, dt.datetime.combine(day, dt.time(12, u % 60), tzinfo=dt.timezone.utc)) for u in (2, 999)]
    _write_months(directory, corrected)
    expected = _fresh_cli_tables(ui, ("corrected",))
    assert _tables(directory / "warehouse.duckdb", ("corrected",)) != expected
    dev.set_sensor("activation_source_changes", running=True)
    try:
        def repaired() -> bool:
            runs = dev.runs_tagged("activation/trigger", "activation_source_changes")
            return bool(runs) and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs) and _tables(
                directory / "warehouse.duckdb", ("corrected",)) == expected
        _wait_for(repaired, 600, "the source-changes sensor did not bring the corrected behavior up to date")
    finally:
        dev.set_sensor("activation_source_changes", running=False)
    runs = dev.runs_tagged("activation/trigger", "activation_source_changes")
    assert all(r["status"] == "SUCCESS" for r in runs)
    assets = len(_keys(config, ("corrected",)))
    print(f"source-changes sensor: a correction {(LONG.end_date - day).days} days back, {len(runs)} runs")
    assert len(runs) <= assets  # one run per asset at most, not one per partition
    assert cli.main(["status", "--config", str(config), "--behavior", "corrected"]) == 0


def test_a_backfill_on_a_missing_predecessor_fails_naming_it(ui):
    """Through the UI's path (a backfill run): never start from an empty state."""
    dev = ui["dev"]
    backfill = dev.wait_for_backfill(dev.backfill_ranges({"fragile_firstlast_monthly": ("2025-03-01", "2025-03-01")}))
    assert backfill["status"] in ("COMPLETED_FAILED", "FAILED")
    messages = " ".join(m for run in backfill["runs"] for m in dev.step_failures(run["id"]))
    assert "partition 2025-03-01 of fact_fragile has not been materialized" in messages, messages
    assert "Materialize fact_fragile for those days first" in messages


def test_a_failure_stops_only_its_behavior_and_reexecution_finishes(ui):
    dev = ui["dev"]
    keys = _keys(ui["config"], ("fragile", "posted"))
    first = dev.wait_for_backfill(dev.backfill_all(keys))
    assert first["status"] in ("COMPLETED_FAILED", "FAILED")
    statuses = sorted(r["status"] for r in first["runs"])
    assert "FAILURE" in statuses and "SUCCESS" in statuses  # posted completed, fragile did not
    with duckdb.connect(str(ui["dir"] / "warehouse.duckdb"), read_only=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "fact_fragile" not in tables and "fragile_activation_monthly" not in tables
    # The file is fixed (it arrives whole), and the backfill is re-executed from its failure.
    (ui["dir"] / "fragile" / "broken.parquet").unlink()
    write_parquet_source(ui["dir"] / "fragile" / "broken.parquet", [(42, local_instant(UTC.start_date, 60, "UTC"))])
    ui["fragile"] = ui["fragile"] + [(42, local_instant(UTC.start_date, 60, "UTC"))]
    again = dev.wait_for_backfill(dev.reexecute_backfill_from_failure(first["id"]))
    assert again["status"] == "COMPLETED_SUCCESS"
    assert _tables(ui["dir"] / "warehouse.duckdb", ("fragile",)) == _fresh_cli_tables(ui, ("fragile",))



# --- in a browser ----------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _dismiss_popups(page) -> None:
    """The first-run "Join the Dagster community" dialog appears a moment after the page settles."""
    try:
        page.get_by_role("button", name="Skip").click(timeout=15_000)
    except Exception:  # noqa: BLE001 - no dialog this time
        pass


def _open(page, url: str, wait_for: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.get_by_text(wait_for, exact=False).first.wait_for(state="attached", timeout=60_000)
    page.wait_for_timeout(1500)  # let the graph layout and charts settle before a screenshot


def _record_plot_queries(page) -> dict:
    """The answers of the two queries the Plots tab draws from, by operation: which partition keys
    it charts (`LatestAssetPartitionsQuery`), and their materializations (`AssetPartitionEventsQuery`)."""
    import json

    answers: dict = {}

    def record(response):
        request = response.request
        if "/graphql" not in request.url or request.method != "POST":
            return
        operation = json.loads(request.post_data or "{}").get("operationName")
        if operation in ("LatestAssetPartitionsQuery", "AssetPartitionEventsQuery"):
            answers[operation] = response.json()["data"]["assetNodeOrError"]

    page.on("response", record)
    return answers


def _shown(name: str):
    """A node's label: the graph shortens long names in the middle (visited_enga…_transitions_daily)."""
    import re

    return name if len(name) <= 30 else re.compile(rf"^{re.escape(name[:12])}.*{re.escape(name[-18:])}$")


def test_lineage_partitions_checks_and_plots_in_a_browser(ui):
    import os

    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is installed by `make test` (make browser)"
    shots = Path(os.environ.get("ACTIVATION_SCREENSHOTS") or ui["dir"] / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    url = ui["dev"].url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Tall enough for the whole group at a readable scale: the graph draws only what is in view.
        page = browser.new_page(viewport={"width": 3200, "height": 3600})
        try:
            page.goto(f"{url}/locations/activation_assets/asset-groups/visited")
            _dismiss_popups(page)
            page.get_by_text("visited_firstlast_daily", exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(2000)
            names = ["fact_visited"] + [f"visited_{m}_{g}" for g in ("daily", "weekly", "monthly")
                                        for m in ("firstlast", "activation", "transitions", "growth", "cohorts",
                                                  "distributions")]
            names += [f"visited_{m}_daily" for m in ("engagement", "engagement_transitions", "stickiness")]
            missing = [name for name in names if not page.get_by_text(_shown(name), exact=True).count()]
            assert not missing, f"not in the lineage graph: {missing}"
            # fact -> 3 FirstLast -> 3 activation -> 12 derived models + 3 daily engagement: 21 edges at least.
            edges = page.locator("svg path").count()
            assert edges >= 21, f"expected the graph's edges to be drawn, found {edges} paths"
            page.screenshot(path=str(shots / "lineage.png"))

            page.set_viewport_size({"width": 1700, "height": 1000})
            key = "visited_activation_weekly"
            weeks = len(reference.periods(SEOUL, "weekly"))
            # Every partition materialized ...
            _open(page, f"{url}/assets/{key}?view=partitions", "Materialized")
            body = page.inner_text("body")
            assert f"Materialized ({weeks})" in body and "Failed (0)" in body and "Missing (0)" in body, body[:2000]
            page.screenshot(path=str(shots / "activation_partitions.png"))

            # ... every check passed ...
            _open(page, f"{url}/assets/{key}?view=checks", "one_row_per_user")
            body = page.inner_text("body")
            for check in ("one_row_per_user", "active_users_match_fact", "only_valid_transitions", "matches_days"):
                assert check in body, check
            assert body.count("Succeeded") >= 8 and "Failed" not in body
            page.screenshot(path=str(shots / "activation_checks.png"))

            # ... and the overview's plots chart the per-state counts over the last partitions, daily
            # and weekly: a point for each (up to 120), none after the last one.
            ui["dev"].reload_location()  # the plots as of today's load (the other test's reason)
            answers = _record_plot_queries(page)
            for key, grain in [(key, "weekly"), ("visited_activation_daily", "daily")]:
                answers.clear()
                _open(page, f"{url}/assets/{key}", "Description")
                if grain == "weekly":
                    page.screenshot(path=str(shots / "activation_overview.png"))
                page.get_by_role("button", name="Plots").click()
                page.wait_for_timeout(3000)
                page.locator("canvas").first.scroll_into_view_if_needed()  # the overview scrolls inside a pane
                body = page.inner_text("body")
                for series in ("new", "retained", "reactivated", "inactive", "churned"):
                    assert series in body, (key, series)
                assert page.locator("canvas").count() >= 5, key
                periods = [p.isoformat() for p in reference.periods(SEOUL, grain)]
                plotted = answers["LatestAssetPartitionsQuery"]["partitionKeyConnection"]["results"]
                assert plotted == periods[::-1][:120], (key, plotted[:3], periods[-3:])
                points = answers["AssetPartitionEventsQuery"]["latestMaterializationByPartition"]
                assert sorted(m["partition"] for m in points if m) == sorted(plotted), key
                page.screenshot(path=str(shots / f"activation_plots_{grain}.png"))

        finally:
            browser.close()
