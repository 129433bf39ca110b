"""A throwaway PostgreSQL cluster for the tests of a production instance: Debian's `postgresql`
binaries (`make postgres` installs them), a data directory in a temporary folder, a free port, and
a Unix socket of its own. PostgreSQL refuses to run as root: as root, it runs as `postgres`."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from .dagster_dev import free_port


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `make postgres` installs Debian's postgresql")
    return Path(found[-1]).parent


class Postgres:
    def __init__(self, directory: Path):
        self.directory, self.port, self.bin = directory, free_port(), _binaries()
        self.data, self.socket = directory / "data", directory / "socket"

    @property
    def url(self) -> str:
        # SQLAlchemy 2.1 reads a bare postgresql:// with psycopg 3; dagster-postgres installs psycopg2.
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/dagster"

    def _run(self, *command: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> Postgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.mkdir()
        if os.geteuid() == 0:  # (a folder outside pytest's, which only root may enter)
            shutil.chown(self.directory, "postgres")
            shutil.chown(self.socket, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "server.log"), "-w",
                  "-o", f"-p {self.port} -k {self.socket} -h 127.0.0.1", "start")
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "dagster")
        return self

    def reset(self) -> None:
        """An empty `dagster` database: a fresh instance."""
        for tool in ("dropdb", "createdb"):
            self._run(str(self.bin / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "dagster")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def instance_yaml(self) -> str:
        """The shipped instance settings (one slot per pool, run monitoring) over this cluster, as
        docs/production.md has them: Postgres's storage instead of the instance's SQLite default."""
        shipped = (Path(__file__).resolve().parent.parent / "activation_assets" / "instance" / "dagster.yaml").read_text()
        settings = yaml.safe_load(shipped)
        return yaml.safe_dump({**settings, "storage": {"postgres": {"postgres_url": self.url}}}, sort_keys=False)
