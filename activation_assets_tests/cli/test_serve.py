"""`activation serve`: a command handed to the server does what it does in its own process (the same
rows, output and exit status), and a server whose code changed hands commands back."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from activation_assets.cli import client

from .. import reference
from ..conftest import assert_grains_match_reference, edge_events, small_behavior

SPEC = reference.Spec("Europe/Berlin", dt.date(2025, 3, 1), dt.date(2025, 4, 12), "monday")


class Server:
    def __init__(self, directory: Path):
        self.socket = directory / "serve.sock"
        # A module the server imports at its start (Python imports `sitecustomize` from the path),
        # standing for the server's own code changing on disk.
        probe = directory / "probe"
        probe.mkdir()
        self.own_module = probe / "sitecustomize.py"
        self.own_module.write_text("# imported by every Python process of this test's server\n")
        self.env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ACTIVATION_CONFIG")}
        self.env.update({client.SOCKET_ENV: str(self.socket),
                         "PYTHONPATH": os.pathsep.join([str(probe), *filter(None, [os.environ.get("PYTHONPATH")])])})
        self.process = subprocess.Popen([sys.executable, "-m", "activation_assets.cli", "serve", "--socket",
                                         str(self.socket)], env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()
        self.wait_for("ready")

    def wait_for(self, words: str) -> str:
        """The server's next line of output, which says `words`."""
        try:
            line = self.lines.get(timeout=120)
        except queue.Empty:
            raise AssertionError(f"the server said nothing in 2 minutes (waiting for {words!r})") from None
        assert words in line, line
        return line

    def command(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        """`activation ARGS` as a user types it, with this server's socket."""
        return subprocess.run([str(Path(sys.executable).parent / "activation"), *args], cwd=cwd, env=self.env,
                              capture_output=True, text=True, timeout=300)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


@pytest.fixture
def server(tmp_path):
    running = Server(tmp_path)
    yield running
    if running.process.poll() is None:
        running.stop()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads in /proc")
def test_a_served_materialize_writes_the_spec_s_rows_and_exits_as_its_own_process_would(server, tmp_path):
    # The server forks from one thread: a lock held by another at the fork would stay held in the fork.
    assert _threads(server.process.pid) == 1

    rows = edge_events(SPEC, seed=5, users=list(range(1, 25)))
    config = small_behavior(tmp_path, SPEC, rows)
    done = server.command("materialize", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    server.wait_for(f"activation materialize --config {config}: exit 0")  # the server's fork ran it
    assert "Last complete period of each grain" in done.stdout and "CHECK FAILED" not in done.stdout
    assert_grains_match_reference(tmp_path / "warehouse.duckdb", rows, SPEC)
    # The command's instance is the project's (next to its config), opened by the fork, not the server.
    assert (tmp_path / ".dagster_home" / "dagster.yaml").exists()
    again = server.command("status", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    server.wait_for("activation status")

    # A config that does not exist: the command's one sentence and its exit status, no trace.
    missing = server.command("materialize", "--config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: config file") and len(missing.stderr.strip().splitlines()) == 1
    server.wait_for("exit 1")
    usage = server.command("materialize", "--grain", "hourly", cwd=tmp_path)
    assert usage.returncode == 2 and "invalid choice: 'hourly'" in usage.stderr
    server.wait_for("exit 2")
    assert _threads(server.process.pid) == 1  # still: nothing the forks did reached the server

    # A second server on the same socket says so; the first still serves.
    second = subprocess.run([sys.executable, "-m", "activation_assets.cli", "serve", "--socket", str(server.socket)],
                            env=server.env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1 and f"a server already listens at {server.socket}" in second.stderr
    assert server.command("validate", "--config", str(config), cwd=tmp_path).returncode == 0
    server.wait_for("activation validate")

    # Stopped, it removes its socket; commands then run in their own process.
    assert server.stop() == 0 and not server.socket.exists()
    alone = server.command("validate", "--config", str(config), cwd=tmp_path)
    assert alone.returncode == 0 and "valid" in alone.stdout


def test_a_server_whose_code_changed_hands_the_command_back_and_starts_again(server, tmp_path):
    rows = edge_events(SPEC, seed=6, users=list(range(1, 8)))
    config = small_behavior(tmp_path, SPEC, rows)
    later = time.time() + 60
    os.utime(server.own_module, (later, later))

    handed_back = server.command("validate", "--config", str(config), cwd=tmp_path)
    assert handed_back.returncode == 0 and "valid" in handed_back.stdout
    assert f"{server.own_module} changed since it started; this command runs in its own process" in handed_back.stderr
    server.wait_for(f"{server.own_module} changed since the server started: starting again")
    server.wait_for("ready")  # the same process, started again with the code now on disk
    served = server.command("validate", "--config", str(config), cwd=tmp_path)
    assert served.returncode == 0 and "note:" not in served.stderr
    server.wait_for("activation validate")


def test_without_a_server_the_command_runs_in_its_own_process(tmp_path, monkeypatch):
    path = tmp_path / "serve.sock"
    monkeypatch.setenv(client.SOCKET_ENV, str(path))
    assert client.run_through_server(["validate"]) is None  # no socket
    left_behind = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_behind.bind(str(path))  # a socket file nobody listens on (a server killed with -9)
    left_behind.close()
    assert client.run_through_server(["validate"]) is None
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink()
    listening.bind(str(path))
    listening.listen(1)
    with listening:
        # Neither the server itself nor the UI is handed to a server; nor anything when switched off.
        assert client.run_through_server(["serve"]) is None and client.run_through_server(["ui"]) is None
        monkeypatch.setenv(client.SOCKET_ENV, "off")
        assert client.socket_path() is None and client.run_through_server(["validate"]) is None
    monkeypatch.delenv(client.SOCKET_ENV)
    # One server per Python environment and user, by default.
    assert str(os.getuid()) in client.socket_path() and client.socket_path().endswith(".sock")


KEEP_SCRIPTS = """
import sys, tempfile
import dagster as dg
from alembic.script import base
from activation_assets.cli import server
read = []
loader = base.Script._from_path.__func__
base.Script._from_path = classmethod(lambda cls, *a, **k: read.append(1) or loader(cls, *a, **k))

def open_new_instance():
    read.clear()
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home) as instance:
        instance.get_runs(limit=1)
        instance.get_latest_materialization_event(dg.AssetKey("_"))
    return len(read)

print(open_new_instance())
server.keep_migration_scripts_loaded()
print(open_new_instance())
"""


def test_the_server_reads_dagster_s_migration_scripts_once_for_every_fork():
    # Each new instance reads every migration script of its storages; once the server has read them,
    # an instance opened after (in a fork, which inherits them) reads none.
    out = subprocess.run([sys.executable, "-c", KEEP_SCRIPTS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split()[-2:])
    assert before > 50 and after == 0


@contextlib.contextmanager
def _stand_in_server(tmp_path: Path):
    """A socket that takes one `activation validate` as a server would: (the command's process, the
    connection, its request). The command's streams, passed with it, are closed here at once."""
    path = tmp_path / "serve.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ACTIVATION_CONFIG")}
    env[client.SOCKET_ENV] = str(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        command = subprocess.Popen([str(Path(sys.executable).parent / "activation"), "validate"], cwd=tmp_path,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        connection, _ = listener.accept()
        with connection:
            request, fds = client.receive_request(connection, 3)
            for fd in fds:
                os.close(fd)
            yield command, connection, request


def test_ctrl_c_and_kill_reach_the_fork_running_the_command(tmp_path):
    # The stand-in names, as the fork running the command, a process of the test's; the command's
    # SIGTERM must reach that process, and the fork's exit status be the command's.
    with _stand_in_server(tmp_path) as (command, connection, request):
        assert request["argv"] == ["validate"] and request["cwd"] == str(tmp_path)
        assert request["env"][client.SOCKET_ENV] == str(tmp_path / "serve.sock")
        fork = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        client.reply(connection, {"pid": fork.pid})
        time.sleep(1)  # the command now waits for the fork's exit status
        command.send_signal(signal.SIGTERM)
        assert fork.wait(timeout=30) == -signal.SIGTERM
        client.reply(connection, {"exit": 143})
        assert command.wait(timeout=30) == 143
    assert "Traceback" not in command.stderr.read()


def test_ctrl_c_before_the_command_started_stops_it_without_a_trace(tmp_path):
    # A server still warming up (no reply yet): Ctrl-C leaves quietly, with 130, and the closed
    # connection tells the fork not to run the command.
    with _stand_in_server(tmp_path) as (command, connection, _):
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=30) == 130
        assert "Traceback" not in command.stderr.read()
        with pytest.raises(OSError):
            for _ in range(3):  # the first write may still be buffered; a later one meets the closed end
                client.reply(connection, {"pid": os.getpid()})
                time.sleep(0.2)


def test_a_command_handed_back_by_a_stale_server_keeps_its_own_ctrl_c(tmp_path, monkeypatch):
    # The command runs in its own process after all: Ctrl-C there must be its own KeyboardInterrupt,
    # not the forwarding meant for a fork that never started.
    path = tmp_path / "serve.sock"
    monkeypatch.setenv(client.SOCKET_ENV, str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)

        def stale_server():
            connection, _ = listener.accept()
            with connection:
                _, fds = client.receive_request(connection, 3)
                for fd in fds:
                    os.close(fd)
                client.reply(connection, {"stale": "its code changed"})

        answering = threading.Thread(target=stale_server)
        answering.start()
        own = {signum: signal.getsignal(signum) for signum in client.FORWARDED}
        assert client.run_through_server(["validate"]) is None
        answering.join(timeout=30)
    assert {signum: signal.getsignal(signum) for signum in client.FORWARDED} == own
