"""The layer on a production instance: Dagster's storage on PostgreSQL, and the webserver, the daemon
and the code server as three processes (docs/production.md), driven as the UI and the CLI drive it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from .. import reference
from ..conftest import ACTIVATION_COLUMNS, as_set, edge_events, small_behavior, table_rows
from ..dagster_dev import BIN, DagsterDev, free_port
from ..postgres import Postgres

pytestmark = [pytest.mark.ui, pytest.mark.postgres]
SPEC = reference.Spec("UTC", dt.date(2025, 3, 1), dt.date(2025, 4, 12), "monday")


class Deployment(DagsterDev):
    """`dagster code-server`, `dagster-webserver` and `dagster-daemon` started apart, over one home."""

    def start(self, timeout: float = 180) -> Deployment:
        grpc = free_port()
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "ACTIVATION_CONFIG": str(self.config),
               "PYTHONPATH": os.pathsep.join(filter(None, (str(self._faster_daemon()), os.environ.get("PYTHONPATH"))))}
        workspace = self.home / "workspace.yaml"
        workspace.write_text(f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc}\n"
                             "      location_name: activation_assets\n")
        commands = [
            [str(BIN / "dagster"), "code-server", "start", "-m", "activation_assets.definitions",
             "-h", "127.0.0.1", "-p", str(grpc)],
            [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(self.port)],
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
        ]
        self.processes = [subprocess.Popen(c, cwd=self.home, env=env, stdout=(self.home / f"{i}.log").open("w"),
                                           stderr=subprocess.STDOUT, start_new_session=True)
                          for i, c in enumerate(commands)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2):
                    self._wait_for_location(deadline)
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, RuntimeError):
                time.sleep(1)
        self.stop()
        raise TimeoutError(f"the deployment did not come up; see {self.home}/*.log")

    def stop(self) -> None:
        for process in getattr(self, "processes", []):
            if process.poll() is None:
                os.killpg(os.getpgid(process.pid), 15)
        for process in getattr(self, "processes", []):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(os.getpgid(process.pid), 9)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    cluster = Postgres(Path(tempfile.mkdtemp(prefix="activation-pg-"))).start()
    directory = tmp_path_factory.mktemp("production")
    rows = edge_events(SPEC, seed=41, users=list(range(1, 40)))
    config = small_behavior(directory, SPEC, rows)
    home = directory / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(cluster.instance_yaml())
    running = Deployment(config, home, directory / "deployment.log").start()
    try:
        yield {"dagster": running, "config": config, "home": home, "rows": rows, "dir": directory}
    finally:
        running.stop()
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)


def _instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def test_the_instance_is_postgres_with_its_pool_and_run_monitoring(deployment):
    with _instance(deployment["home"]) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.run_monitoring_enabled
    health = deployment["dagster"].graphql(
        "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }")
    required = {d["daemonType"]: d["healthy"] for d in health["instance"]["daemonHealth"]["allDaemonStatuses"]
                if d["required"]}
    assert {"SCHEDULER", "SENSOR", "BACKFILL", "MONITORING", "QUEUED_RUN_COORDINATOR"} <= set(required)


def test_the_cli_then_a_ui_backfill_then_the_daily_sensor_on_postgres(deployment):
    """`activation materialize` of the monthly grain (named runs, recorded in Postgres), a backfill
    of the daily grain from the UI (its runs take turns in the pool), then the `activation_daily`
    sensor builds what is left (the weekly grain): every table equals the reference."""
    dagster, config, home = deployment["dagster"], deployment["config"], deployment["home"]
    environment = {k: v for k, v in os.environ.items() if k != "ACTIVATION_CONFIG"}
    result = subprocess.run([str(BIN / "activation"), "materialize", "--config", str(config), "--grain", "monthly"],
                            env={**environment, "DAGSTER_HOME": str(home)}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    daily = [t for t in dg.AssetSelection.groups("visited").resolve(
        _definitions(config).resolve_asset_graph()) if t.to_user_string().endswith("_daily")]
    backfill = dagster.backfill_all([k.to_user_string() for k in daily])
    assert dagster.wait_for_backfill(backfill)["status"] == "COMPLETED_SUCCESS"

    dagster.set_sensor("activation_daily", True)
    deadline = time.monotonic() + 600
    with _instance(home) as instance:
        while time.monotonic() < deadline:
            done = instance.get_materialized_partitions(dg.AssetKey("visited_transitions_weekly"))
            if done and not instance.get_runs(filters=dg.RunsFilter(statuses=[
                    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])):
                break
            time.sleep(3)
        dagster.set_sensor("activation_daily", False)
        runs = instance.get_runs()
        assert {r.job_name for r in runs if r.tags.get("dagster/sensor_name") == "activation_daily"} == {"visited_weekly"}
        assert {"visited_fact", "visited_monthly"} <= {r.job_name for r in runs}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # One slot: no two runs of the instance overlapped.
        spans = sorted((r.start_time, r.end_time) for r in instance.get_run_records() if r.start_time)
        assert all(later[0] >= earlier[1] - 0.001 for earlier, later in zip(spans, spans[1:]))
    database = deployment["dir"] / "warehouse.duckdb"
    for grain in ("daily", "weekly", "monthly"):
        expected = reference.activation(deployment["rows"], SPEC, grain)
        assert as_set(table_rows(database, f"visited_activation_{grain}"), ACTIVATION_COLUMNS) == as_set(
            expected, ACTIVATION_COLUMNS), grain


def _definitions(config: Path) -> dg.Definitions:
    from activation_assets.config import load_config
    from activation_assets.orchestration.definitions import build_defs

    return build_defs(load_config(config))
