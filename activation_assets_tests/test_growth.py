"""Growth accounting, cohorts, distributions and the report, against references from the facts."""

from __future__ import annotations

import datetime as dt
import re
import shutil

import duckdb
import pytest

from activation_assets import checks as inv
from activation_assets.config import Grain, load_config
from activation_assets.report import write_reports

from . import reference
from .conftest import edge_events, run_graph, small_behavior, table_rows

SPEC = reference.Spec("Europe/Berlin", dt.date(2025, 2, 12), dt.date(2025, 6, 3), "monday")  # DST in March
GRAINS = ["daily", "weekly", "monthly"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    directory = tmp_path_factory.mktemp("growth")
    rows = edge_events(SPEC, seed=51, users=list(range(1, 45)))
    config = small_behavior(directory, SPEC, rows)
    assert run_graph(config) == 0
    return {"config": load_config(config), "rows": rows, "db": directory / "warehouse.duckdb", "dir": directory}


@pytest.mark.parametrize("grain", GRAINS)
def test_growth_equals_the_classic_formulation(graph, grain):
    expected = {r["period_start"]: r for r in reference.classic_growth(graph["rows"], SPEC, grain)}
    actual = {r["period_start"]: r for r in table_rows(graph["db"], f"visited_growth_{grain}")}
    assert sorted(actual) == sorted(expected)  # one row per period, zeros before any activity
    for period, row in actual.items():
        want = expected[period]
        for column in ("active", "new", "retained", "reactivated", "churned", "dormant", "users_ever",
                       "active_prev", "active_change"):
            assert row[column] == want[column], (period, column)
        for column in ("retention_rate", "quick_ratio"):
            assert (row[column] is None) == (want[column] is None), (period, column)
            if want[column] is not None:
                assert row[column] == pytest.approx(want[column])


@pytest.mark.parametrize("grain", GRAINS)
def test_cohorts_equal_reference(graph, grain):
    expected = {(r["period_start"], r["cohort"]): r for r in reference.cohorts(graph["rows"], SPEC, grain)}
    actual = {(r["period_start"], r["cohort"]): r for r in table_rows(graph["db"], f"visited_cohorts_{grain}")}
    assert set(actual) == set(expected)
    for key, row in actual.items():
        want = expected[key]
        assert (row["age"], row["cohort_size"], row["active_users"]) == (
            want["age"], want["cohort_size"], want["active_users"]), key
        assert row["retention"] == pytest.approx(want["active_users"] / want["cohort_size"])


def _bucket(value: int) -> str:
    return next(name for start, name in reversed([(1, "1"), (2, "2"), (3, "3-6"), (7, "7-13"), (14, "14-29"),
                                                  (30, "30+")]) if value >= start)


@pytest.mark.parametrize("grain", GRAINS)
def test_distributions_bucket_the_activation_columns(graph, grain):
    expected: dict = {}
    for r in reference.activation(graph["rows"], SPEC, grain):
        if r["return_gap"] is not None:
            key = (r["period_start"], "return_gap", _bucket(r["return_gap"]))
            expected[key] = expected.get(key, 0) + 1
        if r["streak"]:
            key = (r["period_start"], "streak", _bucket(r["streak"]))
            expected[key] = expected.get(key, 0) + 1
    actual = {(r["period_start"], r["measure"], r["bucket"]): r["users"]
              for r in table_rows(graph["db"], f"visited_distributions_{grain}")}
    assert actual == expected


def test_growth_checks_catch_a_broken_identity(graph, tmp_path):
    copy = tmp_path / "w.duckdb"
    shutil.copy(graph["db"], copy)
    period = dt.date(2025, 4, 7)
    with duckdb.connect(str(copy)) as conn:
        conn.execute("UPDATE visited_growth_weekly SET churned = churned + 1 WHERE period_start = ?", [period])
        conn.execute("UPDATE visited_cohorts_weekly SET cohort_size = cohort_size + 1"
                     " WHERE period_start = ? AND cohort = (SELECT min(cohort) FROM visited_cohorts_weekly)", [period])
        outcomes: dict = {}
        behavior = graph["config"].behaviors[0]
        inv.evaluate(conn, inv.GROWTH_CHECKS + inv.COHORTS_CHECKS, behavior, Grain.weekly, period, outcomes)
    assert not outcomes["identities"].passed and "active_prev" in outcomes["identities"].summary()
    assert outcomes["active_prev_is_previous_active"].passed
    assert not outcomes["cohort_sizes_stable"].passed and "1 cohorts changed size" in outcomes["cohort_sizes_stable"].summary()


def test_report_pages_are_self_contained(graph, tmp_path):
    config = graph["config"]
    index = write_reports(config, list(config.behaviors), None, tmp_path / "reports", tmp_path / "png")
    pages = sorted(p.name for p in index.parent.glob("*.html"))
    assert pages == ["index.html", "visited_daily.html", "visited_monthly.html", "visited_weekly.html"]
    page = (index.parent / "visited_weekly.html").read_text()
    charts = re.findall(r"data-chart='(\w+)'[^>]*src='data:image/png;base64,([A-Za-z0-9+/=]{1000,})'", page)
    assert [name for name, _ in charts] == ["growth", "quick_ratio", "transitions", "cohorts", "return_gap"]
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    latest = reference.classic_growth(graph["rows"], SPEC, "weekly")[-1]
    assert f"{latest['active']:,} active = {latest['new']:,} new" in page
    assert len(list((tmp_path / "png").glob("*.png"))) == 15


@pytest.mark.slow
@pytest.mark.ui
def test_report_renders_offline_in_chromium(graph, tmp_path):
    from playwright.sync_api import sync_playwright

    from .test_ui import CHROMIUM, CHROMIUM_ARGS

    config = graph["config"]
    index = write_reports(config, list(config.behaviors), None, tmp_path / "reports")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(offline=True)  # nothing may come from the network
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        try:
            page.goto(index.as_uri())
            page.get_by_text("visited — monthly").click()
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img.chart", "imgs => imgs.map(i => [i.dataset.chart, i.complete, i.naturalWidth, i.naturalHeight])")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert [s[0] for s in sizes] == ["growth", "quick_ratio", "transitions", "cohorts", "return_gap"]
    assert all(complete and width > 300 and height > 200 for _, complete, width, height in sizes), sizes
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
