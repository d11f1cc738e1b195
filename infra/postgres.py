"""A real PostgreSQL server for the connector tests: initdb in a temporary folder, logical WAL on.

Uses Debian's ``postgresql`` package (``initdb`` and ``pg_ctl`` on the PATH or under
``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so as root the server
runs as the ``postgres`` user the package creates (give it a folder of its own, such as a fresh
``tempfile.mkdtemp()``: it is handed to that user, but its parents must let it through).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from caselink.infra.kafka_runtime import free_port


class PostgresError(RuntimeError):
    pass


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if not found:
        raise PostgresError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return found


class LocalPostgres:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.socket_dir = directory / "sock"
        self.log = directory / "postgres.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    def _run(self, args: list[str]) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self._as_root else args
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PostgresError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()} "
                                f"(log: {self.log})")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=caselink dbname=postgres"

    def start(self) -> LocalPostgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_root:
            shutil.chown(self.directory, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        if not self.data.exists():
            self._run([_binary("initdb"), "-D", str(self.data), "-U", "caselink", "--auth=trust", "-E", "UTF8"])
        self.resume()
        return self

    def resume(self) -> None:
        """Start (or restart) the server on the existing data directory."""
        opts = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c wal_level=logical "
                "-c max_replication_slots=10 -c max_wal_senders=10 -c fsync=off")
        self._run([_binary("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "start"])

    def stop(self) -> None:
        if self.data.exists():
            self._run([_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
