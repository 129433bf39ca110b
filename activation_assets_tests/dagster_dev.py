"""A real `dagster dev` (webserver + daemon) for tests, driven the way the UI drives it: GraphQL.

Started in its own session (a background `dagster dev` ignores SIGINT/SIGTERM otherwise) on a free
port, ready when `/server_info` answers, and stopped as a whole process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAEMON_INTERVAL = 5  # seconds between the backfill daemon's looks (Dagster's own: 30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterDev:
    def __init__(self, config: Path, home: Path, log: Path):
        self.config, self.home, self.log = config, home, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> DagsterDev:
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "activation_assets" / "instance" / "dagster.yaml", self.home / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "ACTIVATION_CONFIG": str(self.config),
               "PYTHONPATH": os.pathsep.join(filter(None, (str(self._faster_daemon()), os.environ.get("PYTHONPATH"))))}
        self.process = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=self.home, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited early; see {self.log}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        self._wait_for_location(deadline)
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"dagster dev not ready after {timeout} s; see {self.log}")

    def _faster_daemon(self) -> Path:
        """A `sitecustomize` for the processes of this `dagster dev` only: the daemon's backfill loop
        (and the asset daemon's pre-sensor wait) look every DAEMON_INTERVAL seconds instead of
        Dagster's fixed 30. A backfill advances one step of its graph per look, so the tests waited
        30 s per level of the graph (measured: 1,300 s of the UI tests); what they assert is the same."""
        site = self.home / "_test_site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import dagster._daemon.controller as controller\n"
            f"controller.DEFAULT_DAEMON_INTERVAL_SECONDS = {DAEMON_INTERVAL}\n")
        return site

    def _wait_for_location(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            data = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name"
                                " locationOrLoadError { __typename ... on PythonError { message } } } } } }")
            entries = data["workspaceOrError"]["locationEntries"]
            loaded = [e for e in entries if e["locationOrLoadError"]
                      and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"]
            errors = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]
                      and e["locationOrLoadError"]["__typename"] == "PythonError"]
            if errors:
                raise RuntimeError(f"code location failed to load: {errors[0]['message']}")
            if loaded:
                return
            time.sleep(0.5)

    def reload_location(self, name: str = "activation_assets", timeout: float = 120) -> None:
        """*Reload* in the UI: the definitions are loaded again, now (a definition whose window has
        ended is shifted for the plots as of its load: `partitions.in_view`)."""
        self.graphql("mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name)"
                     " { __typename } }", {"name": name})
        self._wait_for_location(time.monotonic() + timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=20)
        # The daemon and code servers are in the same group; make sure none is left.
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(payload["errors"])
        return payload["data"]

    # --- what the UI does --------------------------------------------------------------------------

    def launch_backfill(self, params: dict) -> str:
        data = self.graphql(
            """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
                ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }""",
            {"params": params})["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(data)
        return data["backfillId"]

    def backfill_all(self, keys: list[str]) -> str:
        return self.launch_backfill({"assetSelection": [{"path": [k]} for k in keys], "allPartitions": True})

    def backfill_ranges(self, ranges: dict[str, tuple[str, str]]) -> str:
        return self.launch_backfill({"partitionsByAssets": [
            {"assetKey": {"path": [key]}, "partitions": {"range": {"start": first, "end": last}}}
            for key, (first, last) in ranges.items()]})

    def wait_for_backfill(self, backfill_id: str, timeout: float = 900) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            backfill = self.graphql(
                """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                    __typename ... on PartitionBackfill { id status runs(limit: 1000) { id status } } } }""",
                {"id": backfill_id})["partitionBackfillOrError"]
            if backfill["status"] in ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                if backfill["status"] == "COMPLETED_SUCCESS" and any(
                        r["status"] not in ("SUCCESS",) for r in backfill["runs"]):
                    time.sleep(1)
                    continue
                return backfill
            time.sleep(2)
        raise TimeoutError(f"backfill {backfill_id} not finished after {timeout} s")

    def reexecute_backfill_from_failure(self, backfill_id: str) -> str:
        data = self.graphql(
            """mutation($params: ReexecutionParams!) { reexecutePartitionBackfill(reexecutionParams: $params) {
                __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
            {"params": {"parentRunId": backfill_id, "strategy": "FROM_FAILURE"}})["reexecutePartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(data)
        return data["backfillId"]

    def stale_status(self, key: str, partitions: list[str]) -> list[str]:
        node = self.graphql(
            """query($key: AssetKeyInput!, $partitions: [String!]) { assetNodeOrError(assetKey: $key) {
                ... on AssetNode { staleStatusByPartition(partitions: $partitions) } } }""",
            {"key": {"path": [key]}, "partitions": partitions})["assetNodeOrError"]
        return node["staleStatusByPartition"]

    def set_sensor(self, name: str, running: bool) -> None:
        selector = {"repositoryLocationName": "activation_assets", "repositoryName": "__repository__",
                    "sensorName": name}
        if running:
            result = self.graphql(
                """mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
                    __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
                {"selector": selector})["startSensor"]
            ok = result["__typename"] == "Sensor"
        else:
            state = self.graphql(
                """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
                    ... on Sensor { sensorState { id selectorId } } } }""", {"selector": selector})
            ids = state["sensorOrError"]["sensorState"]
            result = self.graphql(
                """mutation($id: String!, $selectorId: String!) { stopSensor(id: $id, jobSelectorId: $selectorId) {
                    __typename } }""", {"id": ids["id"], "selectorId": ids["selectorId"]})["stopSensor"]
            ok = result["__typename"] == "StopSensorMutationResult"
        if not ok:
            raise RuntimeError(result)

    def runs_tagged(self, key: str, value: str) -> list[dict]:
        data = self.graphql(
            """query($filter: RunsFilter!) { runsOrError(filter: $filter) {
                ... on Runs { results { runId status } } } }""",
            {"filter": {"tags": [{"key": key, "value": value}]}})["runsOrError"]
        return data["results"]

    def step_failures(self, run_id: str) -> list[str]:
        data = self.graphql(
            """query($runId: ID!) { logsForRun(runId: $runId) { __typename ... on EventConnection {
                events { __typename ... on ExecutionStepFailureEvent { error { message } } } } } }""",
            {"runId": run_id})["logsForRun"]
        return [e["error"]["message"] for e in data["events"] if e["__typename"] == "ExecutionStepFailureEvent"]
