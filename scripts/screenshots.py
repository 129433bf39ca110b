"""The docs' screenshots, of the current demo: `make screenshots` after `make demo`.

Starts `dagster dev` on the demo's own instance (.dagster_home) and config, takes the UI pages the docs
show with Debian's Chromium (Playwright drives it), and writes the report's charts and landing page.
Everything lands in docs/img/, overwriting what was there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BEHAVIOR = "visited_app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ui(port: int) -> subprocess.Popen:
    # `activation ui`, as `make ui` runs it: the demo's config and project-local instance.
    process = subprocess.Popen([str(BIN / "activation"), "ui", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return process
        except OSError:
            time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    raise SystemExit("dagster dev did not start in 180 s")


def dismiss_popups(page) -> None:
    try:
        page.get_by_role("button", name="Skip").click(timeout=15_000)
    except Exception:  # noqa: BLE001 - no first-run dialog this time
        pass


def settle(page, url: str, text: str) -> None:
    page.goto(url)  # not "networkidle": the UI polls the instance, so the network is never idle for long
    page.get_by_text(text, exact=False).first.wait_for(state="attached", timeout=90_000)
    page.wait_for_timeout(2500)


def ui_shots(url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 3200, "height": 3600})
        try:
            page.goto(f"{url}/locations/activation_assets/asset-groups/{BEHAVIOR}")
            dismiss_popups(page)
            settle(page, f"{url}/locations/activation_assets/asset-groups/{BEHAVIOR}", f"{BEHAVIOR}_firstlast_daily")
            page.screenshot(path=str(IMG / "lineage.png"))
            page.set_viewport_size({"width": 3000, "height": 2700})
            page.goto(f"{url}/asset-groups")
            page.locator(".CodeMirror").first.click(timeout=90_000)
            page.keyboard.type(f'group:"raw" or group:"dbt" or group:"{BEHAVIOR}"')
            page.keyboard.press("Enter")
            page.wait_for_timeout(2000)
            page.mouse.click(1500, 2640)  # focus the graph, then its shortcut: expand all groups
            page.keyboard.press("Alt+KeyE")
            page.get_by_text("fct_app_opens", exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=str(IMG / "lineage_dbt.png"))
            page.set_viewport_size({"width": 1700, "height": 1000})
            key = f"{BEHAVIOR}_activation_weekly"
            settle(page, f"{url}/assets/{key}?view=partitions", "Materialized")
            page.screenshot(path=str(IMG / "activation_partitions.png"))
            settle(page, f"{url}/assets/{key}?view=checks", "one_row_per_user")
            page.screenshot(path=str(IMG / "activation_checks.png"))
            settle(page, f"{url}/assets/{key}", "Description")
            page.screenshot(path=str(IMG / "activation_overview.png"))
            settle(page, f"{url}/assets/{BEHAVIOR}_engagement_daily", "Description")
            page.get_by_role("button", name="Plots").click()
            page.wait_for_timeout(3000)
            page.locator("canvas").first.scroll_into_view_if_needed()  # the overview scrolls inside a pane
            page.screenshot(path=str(IMG / "engagement_plots.png"))
        finally:
            browser.close()


def report_shots() -> None:
    from playwright.sync_api import sync_playwright

    out = ROOT / "reports"
    subprocess.run([str(BIN / "activation"), "report", "--behavior", BEHAVIOR, "--out", str(out), "--png",
                    str(out / "png")], cwd=ROOT, check=True)
    for name in ["weekly_growth", "weekly_cohorts", "weekly_transitions", "weekly_return_gap", "daily_dau_wau_mau",
                 "daily_engagement_states", "daily_retention_rates", "daily_stickiness",
                 "weekly_segment_change_platform", "weekly_segment_active_platform"]:
        shutil.copy(out / "png" / f"report_{BEHAVIOR}_{name}.png", IMG / f"report_{BEHAVIOR}_{name}.png")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto((out / "index.html").as_uri())
        page.wait_for_timeout(1000)
        page.screenshot(path=str(IMG / "report_index.png"))
        browser.close()


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    report_shots()
    port = free_port()
    process = start_ui(port)
    try:
        ui_shots(f"http://127.0.0.1:{port}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    print(f"screenshots written to {IMG}")


if __name__ == "__main__":
    main()
