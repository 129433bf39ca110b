"""The `activation` command's side of `activation serve`: hand the command to a running server.

A server (`server.py`) has imported Dagster and the layer once; for each command it forks a process
that starts with all of that imported and runs the command there, writing to this process's own
stdin, stdout and stderr (passed over the socket). This side imports only the standard library, so
a served command starts in a fraction of the 1-2 s that importing Dagster costs. When no server
answers, or the server's code changed since it started, the command runs in its own process as
before: the server is a speed-up, never a requirement.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile

# The socket's path (`off`: never hand a command to a server).
SOCKET_ENV = "ACTIVATION_SERVE_SOCKET"
# The server itself, and the UI (`dagster dev`, a long-lived process of its own), run here.
NOT_SERVED = frozenset({"serve", "ui"})
# Signals a person or a scheduler sends the command: passed on to the process running it.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LENGTH = struct.Struct("!Q")


def socket_path() -> str | None:
    """Where this Python environment's server listens: one per interpreter and user (the server serves
    any project; each command brings its own working directory and environment)."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit == "off" or not hasattr(socket, "AF_UNIX") or not hasattr(os, "fork"):
        return None
    if explicit:
        return explicit
    key = hashlib.sha1(sys.prefix.encode()).hexdigest()[:12]
    folder = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(folder, f"activation-{os.getuid()}-{key}.sock")


def send_request(connection: socket.socket, request: dict, fds: list[int]) -> None:
    body = json.dumps(request).encode()
    socket.send_fds(connection, [_LENGTH.pack(len(body))], fds)
    connection.sendall(body)


def receive_request(connection: socket.socket, fd_count: int) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, _LENGTH.size, fd_count)
    while len(header) < _LENGTH.size:
        header += _receive_exactly(connection, _LENGTH.size - len(header))
    return json.loads(_receive_exactly(connection, _LENGTH.unpack(header)[0])), fds


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = connection.recv(min(size, 1 << 16))
        if not chunk:
            raise ConnectionError("the connection closed mid-message")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def reply(connection: socket.socket, message: dict) -> None:
    connection.sendall(json.dumps(message).encode() + b"\n")


def run_through_server(argv: list[str]) -> int | None:
    """The command's exit status when a server ran it; None when it is to run in this process."""
    path = socket_path()
    if not argv or argv[0] in NOT_SERVED or path is None or not os.path.exists(path) or not _streams_open():
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:
        connection.close()
        return None  # a server that has gone, its socket file left behind
    running: list[int] = []  # the pid of the fork running the command, once it says it
    # Given back when the command runs here after all (a stale server): its Ctrl-C is its own again.
    own = {signum: signal.signal(signum, lambda received, _frame: _pass_on(running, received))
           for signum in FORWARDED}
    try:
        with connection:
            try:
                send_request(connection, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                                          "path0": sys.path[0] if sys.path else ""}, [0, 1, 2])
            except OSError:
                pass  # a server that closed the connection: a whole request is what a fork runs, so nothing did
            replies = connection.makefile("rb")
            started = _next_reply(replies)
            if started is None or "stale" in started:
                if started is not None:
                    print(f"note: {started['stale']}", file=sys.stderr, flush=True)
                return None  # the command has not started: it runs here
            running.append(started["pid"])
            finished = _next_reply(replies)
    except _Stopped as stopped:  # before the command started: the fork sees the connection closed
        return 128 + stopped.signum
    finally:
        for signum, handler in own.items():
            signal.signal(signum, handler)
    if finished is None:
        print(f"error: the process that ran this command under `activation serve` (pid {running[0]}) ended"
              " without an exit status (killed?); what it printed above is all it did", file=sys.stderr)
        return 1
    return finished["exit"]


class _Stopped(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def _pass_on(running: list[int], signum: int) -> None:
    if not running:
        raise _Stopped(signum)
    try:
        os.kill(running[0], signum)
    except ProcessLookupError:
        pass


def _streams_open() -> bool:
    """Whether stdin, stdout and stderr are all open (cron may close one): a server needs all three."""
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return False
    return True


def _next_reply(replies) -> dict | None:
    try:
        line = replies.readline()  # retried by Python when a forwarded signal interrupts it
    except OSError:
        return None
    return json.loads(line) if line else None
