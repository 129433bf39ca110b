"""`activation serve`: a process that has imported Dagster and the layer once, and runs each command
handed to it (`client.py`) in a fork of itself.

Importing Dagster costs a command 1-2 s before its first step (docs/performance.md); a fork starts
with every module already imported, so a daily `activation materialize` from cron or a shell reaches
its first step in a fraction of that. The fork takes the command's working directory, environment,
arguments and standard streams, and runs exactly what `activation` would run in its own process: the
same code, the same Dagster instance (opened by the command, never by the server), the same exit
status. The server opens nothing of a project's: no config, no warehouse, no instance.

It forks from a single thread (nothing it imports starts one), and it keeps serving only the code it
imported: when a module file changed since it started (an upgrade, an edit), it hands that command
back to run in its own process and starts itself again.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import os
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from activation_assets.cli.client import SOCKET_ENV, receive_request, reply, socket_path
from activation_assets.cli.output import CommandError, say
from activation_assets.cli.process import pause_collection

# What a command imports before its first step, imported once here (a module that a Dagster
# version does not have is skipped: the fork imports what it needs either way).
WARM_MODULES = (
    "activation_assets.cli.runner",
    "activation_assets.cli.parser",
    "activation_assets.orchestration.definitions",
    "activation_assets.orchestration.event_log",
    "activation_assets.engines.duckdb",
    "dagster._core.execution.execute_in_process",
    "dagster._core.executor.in_process",
    "dagster._core.instance.factory",
    "dagster._core.instance.runs.run_domain",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "dagster._core.storage.migration.utils",
    "dagster._core.secrets.env_file",
    "dagster._core.definitions.external_asset",
    "dagster._core.definitions.repository_definition.repository_data_builder",
    "upath.implementations.local",
    "alembic.script",
    "_strptime",
)


def serve(path: str | None, run_command: Callable[[list[str]], int]) -> int:
    """Serve on `path` (None: this Python environment's socket) until stopped: each command is
    `run_command(argv)` (`cli.main.main`) in a fork."""
    began = time.monotonic()
    path = path or socket_path()
    if path is None:
        raise CommandError("`activation serve` needs Unix sockets and fork (Linux, macOS); with"
                           f" {SOCKET_ENV}=off nothing is served: unset it or give --socket")
    listener = _listen(path)  # first: a command sent meanwhile waits for the warm-up, then runs here
    try:
        for name in WARM_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        keep_migration_scripts_loaded()
        imported = module_files()
        say(f"activation serve (pid {os.getpid()}): ready in {time.monotonic() - began:.1f} s at {path};"
            " `activation` commands of this Python environment start here now (Ctrl-C stops it)")
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the forks are reaped by the system
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        gc.freeze()  # what the forks inherit stays out of their collections (and unwritten: shared pages)
        while True:
            connection, _ = listener.accept()
            if not _same_user(connection):
                connection.close()
                continue
            changed = first_changed(imported)
            if changed:
                with connection, contextlib.suppress(OSError, ValueError):  # a command gone meanwhile
                    _, fds = receive_request(connection, 3)  # all of it: closed unread, the command's send would fail
                    for fd in fds:
                        os.close(fd)
                    reply(connection, {"stale": f"`activation serve` starts again: {changed} changed since it"
                                                " started; this command runs in its own process"})
                say(f"{changed} changed since the server started: starting again")
                _close(listener, path)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an ignored signal would stay ignored
                os.execv(sys.executable, sys.orig_argv)
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                _run_command(connection, listener, run_command)  # never returns
            connection.close()
    except KeyboardInterrupt:
        return 0
    finally:
        _close(listener, path)


def keep_migration_scripts_loaded() -> None:
    """Dagster's SQLite storages compare a database's revision with the newest of their migration
    scripts each time an instance opens them, and alembic reads (executes) every script to find it:
    0.2 s of a day's command, 0.4 s on a new instance (loaded up to nine times). The scripts are the
    installed Dagster's own (another Dagster changes its modules, and the server starts again), so the
    server reads each folder once, through a throwaway instance, and its forks find them read."""
    import dagster as dg
    from alembic.script import ScriptDirectory

    build = ScriptDirectory.from_config.__func__
    loaded: dict[tuple, ScriptDirectory] = {}

    def from_config(cls, config):
        key = (cls, config.get_alembic_option("script_location"), tuple(config.get_version_locations_list() or ()))
        if key not in loaded:
            loaded[key] = build(cls, config)
        return loaded[key]

    ScriptDirectory.from_config = classmethod(from_config)
    try:
        with tempfile.TemporaryDirectory() as home:
            Path(home, "dagster.yaml").write_text("{}\n")  # Dagster's defaults, said without a warning
            instance = dg.DagsterInstance.local_temp(home)
            instance.get_runs(limit=1)
            instance.get_latest_materialization_event(dg.AssetKey("_"))
            instance.all_instigator_state()
            instance.dispose()
    except Exception as error:  # a Dagster or alembic that differs: the forks read the scripts themselves
        ScriptDirectory.from_config = classmethod(build)
        say(f"note: Dagster's migration scripts are read by each command ({type(error).__name__}: {error})")


def module_files() -> dict[str, int]:
    """The file of every imported module, with the time it was last modified."""
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            with contextlib.suppress(OSError):
                files[path] = os.stat(path).st_mtime_ns
    return files


def first_changed(files: dict[str, int]) -> str | None:
    """The first of `files` modified (or removed) since; None when none was."""
    for path, modified in files.items():
        try:
            if os.stat(path).st_mtime_ns != modified:
                return path
        except OSError:
            return path
    return None


def _listen(path: str) -> socket.socket:
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # left by a server that has gone
        else:
            raise CommandError(f"a server already listens at {path}; stop it first, or give this one another"
                               " socket with --socket")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)  # the socket is its user's alone (0600)
    try:
        listener.bind(path)
    except OSError as error:
        listener.close()
        raise CommandError(f"cannot listen at {path}: {error.strerror or error}; give another path with --socket"
                           " (and the same in ACTIVATION_SERVE_SOCKET for the commands)") from None
    finally:
        os.umask(umask)
    listener.listen(16)
    return listener


def _close(listener: socket.socket, path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    listener.close()


def _same_user(connection: socket.socket) -> bool:
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # the socket file's mode (0600) keeps other users out
    _, uid, _ = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return uid == os.getuid()


def _run_command(connection: socket.socket, listener: socket.socket, run_command: Callable[[list[str]], int]) -> None:
    """In the fork: become the command's process, run it, report its exit status, exit."""
    code = 1
    log = None
    try:
        listener.close()
        os.setpgid(0, 0)  # the server's terminal's Ctrl-C is not this command's
        for signum, handler in ((signal.SIGCHLD, signal.SIG_DFL), (signal.SIGTERM, signal.SIG_DFL),
                                (signal.SIGHUP, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            signal.signal(signum, handler)
        log = os.fdopen(os.dup(2), "w")  # the server's own stderr, for one line at the end
        request, fds = receive_request(connection, 3)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()  # the command's TZ, as its own process would have it
        tempfile.tempdir = None  # and its TMPDIR
        argv = request["argv"]
        sys.argv = ["activation", *argv]
        if sys.path:
            sys.path[0] = request["path0"]  # the command's script folder (or working directory), not the server's
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
        reply(connection, {"pid": os.getpid()})  # fails when the command was stopped meanwhile: nothing runs
        began = time.monotonic()
        code = _exit_status(run_command, argv)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        atexit._run_exitfuncs()  # what the command registered, as its own process's exit would
        with contextlib.suppress(OSError):
            reply(connection, {"exit": code})
        print(f"pid {os.getpid()}: activation {' '.join(argv)}: exit {code}, {time.monotonic() - began:.1f} s",
              file=log, flush=True)
    finally:
        os._exit(code)


def _exit_status(run_command: Callable[[list[str]], int], argv: list[str]) -> int:
    pause_collection()  # as `activation` starts (cli.process): the runner resumes it at its first run
    try:
        return int(run_command(argv) or 0)
    except SystemExit as exit:  # argparse: --help, a usage error (its message already printed)
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except BaseException:
        traceback.print_exc()
        return 1
