"""Growth accounting, cohorts, distributions and the report, against references from the facts."""

from __future__ import annotations

import datetime as dt
import re
import shutil

import duckdb
import pytest

from activation_assets.checks import invariants as inv
from activation_assets.config import Grain, load_config
from activation_assets.report.html import write_reports

from .. import reference
from ..conftest import as_set, edge_events, materialize, run_graph, small_behavior, table_rows

SPEC = reference.Spec("Europe/Berlin", dt.date(2025, 2, 12), dt.date(2025, 6, 3), "monday")  # DST in March
GRAINS = ["daily", "weekly", "monthly"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    directory = tmp_path_factory.mktemp("growth")
    rows = edge_events(SPEC, seed=51, users=list(range(1, 45)))
    config = small_behavior(directory, SPEC, rows)
    assert run_graph(config) == 0
    return {"config": load_config(config), "path": config, "rows": rows, "db": directory / "warehouse.duckdb",
            "dir": directory}


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


def test_each_summary_materializes_alone(graph):
    """The four summaries are one step (a multi-asset) but each can be materialized on its own: only
    it is written, only its checks run, and its rows are what the whole step wrote."""
    week = dt.date(2025, 4, 7)
    numbers = {"transitions": "users", "growth": "active", "cohorts": "cohort_size", "distributions": "users"}
    tables = {name: f"visited_{name}_weekly" for name in numbers}
    where = f"period_start = DATE '{week}'"
    written = {}
    for name, table in tables.items():
        rows = table_rows(graph["db"], table, where)
        written[name] = as_set(rows, list(rows[0]))
    try:
        for alone in tables:
            with duckdb.connect(str(graph["db"])) as conn:
                for name, table in tables.items():
                    conn.execute(f"UPDATE {table} SET {numbers[name]} = {numbers[name]} + 1000 WHERE {where}")
            result = materialize(graph["path"], [tables[alone]], week.isoformat())
            assert result.success
            assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {tables[alone]}
            checked = {e.asset_key.to_user_string() for e in result.get_asset_check_evaluations()}
            assert checked == ({tables[alone]} if alone != "distributions" else set())  # distributions: no checks
            for name, table in tables.items():
                rows = table_rows(graph["db"], table, where)
                assert (as_set(rows, list(rows[0])) == written[name]) == (name == alone), (alone, name)
    finally:  # leave the module's graph as the whole step wrote it
        assert materialize(graph["path"], list(tables.values()), week.isoformat()).success


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


CHARTS = ["growth", "quick_ratio", "transitions", "cohorts", "return_gap"]
DAILY_CHARTS = CHARTS + ["dau_wau_mau", "engagement_states", "retention_rates", "stickiness"]


def _csv(page: str, name: str) -> list[dict]:
    """The numbers offered next to chart `name`, decoded from the page's data: link."""
    import base64
    import csv
    import io

    encoded, = re.findall(rf"download='visited_\w+_{name}.csv' href='data:text/csv;charset=utf-8;base64,([^']+)'", page)
    return list(csv.DictReader(io.StringIO(base64.b64decode(encoded).decode())))


def test_report_pages_are_self_contained(graph, tmp_path):
    config = graph["config"]
    index, _ = write_reports(config, list(config.behaviors), None, tmp_path / "reports", tmp_path / "png")
    pages = sorted(p.name for p in index.parent.glob("*.html"))
    assert pages == ["index.html", "visited_daily.html", "visited_monthly.html", "visited_weekly.html"]
    page = (index.parent / "visited_weekly.html").read_text()
    charts = re.findall(r"data-chart='(\w+)'[^>]*src='data:image/png;base64,([A-Za-z0-9+/=]{1000,})'", page)
    assert [name for name, _ in charts] == CHARTS
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    latest = reference.classic_growth(graph["rows"], SPEC, "weekly")[-1]
    assert f"{latest['active']:,} active = {latest['new']:,} new" in page
    daily = (index.parent / "visited_daily.html").read_text()
    charts = re.findall(r"data-chart='(\w+)'[^>]*src='data:image/png;base64,([A-Za-z0-9+/=]{1000,})'", daily)
    assert [name for name, _ in charts] == DAILY_CHARTS
    assert len(list((tmp_path / "png").glob("*.png"))) == 2 * len(CHARTS) + len(DAILY_CHARTS)


def test_the_report_is_written_again_only_when_what_it_is_made_of_changed(graph, tmp_path):
    config = graph["config"]
    out = tmp_path / "reports"
    assert write_reports(config, list(config.behaviors), None, out)[1]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.html")}
    assert not write_reports(config, list(config.behaviors), None, out)[1]  # nothing changed
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.html")} == stamps
    (out / "visited_weekly.html").unlink()  # a page is missing
    assert write_reports(config, list(config.behaviors), None, out)[1]
    # A partition written again (its time in the layer's log moves): the pages are made again.
    from activation_assets.models.sql import PARTITION_LOG

    where = "table_name = 'visited_growth_weekly' AND period_start = (SELECT max(period_start)" \
            f" FROM {PARTITION_LOG} WHERE table_name = 'visited_growth_weekly')"
    with duckdb.connect(str(graph["db"])) as conn:
        [(written_at,)] = conn.execute(f"SELECT written_at FROM {PARTITION_LOG} WHERE {where}").fetchall()
        conn.execute(f"UPDATE {PARTITION_LOG} SET written_at = written_at + INTERVAL 1 SECOND WHERE {where}")
    try:
        assert write_reports(config, list(config.behaviors), None, out)[1]
    finally:
        with duckdb.connect(str(graph["db"])) as conn:
            conn.execute(f"UPDATE {PARTITION_LOG} SET written_at = ? WHERE {where}", [written_at])


def test_every_chart_offers_its_numbers_as_csv(graph, tmp_path):
    config = graph["config"]
    index, _ = write_reports(config, list(config.behaviors), None, tmp_path / "reports")
    weekly = (index.parent / "visited_weekly.html").read_text()
    for name in CHARTS:
        assert _csv(weekly, name), name
    expected = reference.classic_growth(graph["rows"], SPEC, "weekly")
    assert [(r["period_start"], int(r["active"]), int(r["churned"])) for r in _csv(weekly, "growth")] == [
        (str(r["period_start"]), r["active"], r["churned"]) for r in expected]
    daily = (index.parent / "visited_daily.html").read_text()
    engagement = reference.engagement_daily(graph["rows"], SPEC)
    assert [(r["period_start"], int(r["dau"]), int(r["wau"]), int(r["mau"])) for r in _csv(daily, "dau_wau_mau")] == [
        (str(r["period_start"]), r["dau"], r["wau"], r["mau"]) for r in engagement]
    last = engagement[-1]["period_start"]
    sticky = reference.stickiness(graph["rows"], SPEC)
    assert sorted((r["window"], int(r["active_days"]), int(r["users"])) for r in _csv(daily, "stickiness")) == sorted(
        (r["window"], r["active_days"], r["users"]) for r in sticky if r["period_start"] == last)


def test_the_landing_page_leads_with_each_behaviors_headline(graph, tmp_path):
    config = graph["config"]
    index, _ = write_reports(config, list(config.behaviors), None, tmp_path / "reports")
    page = index.read_text()
    last, before = reference.engagement_daily(graph["rows"], SPEC)[-2:][::-1]
    day = last["period_start"]
    assert f"DAU on {day}" in page and f">{last['dau']:,}<" in page
    assert f">{last['mau']:,}<" in page and f"{last['dau'] / last['mau']:.1%}" in page
    assert f"{last['dau'] - before['dau']:+,}" in page  # the change against the day before
    weekly = reference.classic_growth(graph["rows"], SPEC, "weekly")[-1]
    assert f"active, week of {weekly['period_start']}" in page
    assert f"{weekly['active_change']:+,}" in page
    if weekly["quick_ratio"] is not None:
        assert f"quick ratio {weekly['quick_ratio']:.2f}" in page
    for grain in GRAINS:
        assert f"href='visited_{grain}.html'" in page
    assert page.count("<img") >= 4 + len(GRAINS)  # a trend line per number


def test_report_marks_a_partial_first_period_and_ticks_on_period_starts(graph, tmp_path):
    import pandas as pd

    from activation_assets.report.html import cohort_scale, period_ticks

    config = graph["config"]
    index, _ = write_reports(config, list(config.behaviors), None, tmp_path / "reports")
    weekly = (index.parent / "visited_weekly.html").read_text()
    first_week = reference.periods(SPEC, "weekly")[0]
    assert first_week < SPEC.start_date  # 2025-02-12 is a Wednesday
    assert f"The first week ({first_week}) starts before start_date ({SPEC.start_date})" in weekly
    assert "starts before start_date" not in (index.parent / "visited_daily.html").read_text()
    weeks = pd.Series(pd.to_datetime(reference.periods(SPEC, "weekly")))
    ticks = period_ticks(weeks, Grain.weekly)
    assert ticks and all(t.weekday() == 0 for t in ticks) and set(ticks) <= set(weeks)
    cohorts = pd.DataFrame(table_rows(graph["db"], "visited_cohorts_monthly"))
    later = [r["active_users"] / r["cohort_size"] for r in reference.cohorts(graph["rows"], SPEC, "monthly")
             if r["age"] >= 1]
    assert cohort_scale(cohorts) == pytest.approx(max(later)) and max(later) < 1


@pytest.mark.slow
@pytest.mark.ui
def test_report_renders_offline_in_chromium(graph, tmp_path):
    from playwright.sync_api import sync_playwright

    from ..orchestration.test_ui import CHROMIUM, CHROMIUM_ARGS

    config = graph["config"]
    index, _ = write_reports(config, list(config.behaviors), None, tmp_path / "reports")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(offline=True)  # nothing may come from the network
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        try:
            page.goto(index.as_uri())
            page.wait_for_load_state("load")
            trends = page.eval_on_selector_all(
                ".tile img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])")
            page.locator("section[data-behavior='visited'] a[href='visited_monthly.html']").click()
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img.chart", "imgs => imgs.map(i => [i.dataset.chart, i.complete, i.naturalWidth, i.naturalHeight])")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(trends) >= 4 + len(GRAINS) and all(done and width > 100 and shown > 100 for done, width, shown in trends)
    assert [s[0] for s in sizes] == ["growth", "quick_ratio", "transitions", "cohorts", "return_gap"]
    assert all(complete and width > 300 and height > 200 for _, complete, width, height in sizes), sizes
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
