"""A real PostgreSQL server for tests, from Debian's packages, in a temporary folder.

``PostgresServer.start()`` runs initdb and pg_ctl (as the ``postgres`` user when the tests
run as root, since PostgreSQL refuses to run as root), listens on a free loopback port
with password authentication for TCP, and creates the role ``hemex``. ``create_database``
gives each test a database of its own. Durability settings are PostgreSQL's defaults.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.peers import free_port, port_open, wait_until
from tests.support.required_tools import missing

ROLE, PASSWORD = "hemex", "hemex-test-password"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    if not found:
        missing(f"PostgreSQL's {name} not found (Debian package postgresql; deploy/install-system-packages.sh)")
    return str(found[-1])


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PostgresServer:
    """A running server: its folder, port and the socket folder superuser commands use."""

    folder: Path
    port: int

    @classmethod
    def start(cls) -> PostgresServer:
        folder = Path(tempfile.mkdtemp(prefix="hemex-pg-"))
        data, sockets = folder / "data", folder / "sockets"
        sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
            shutil.chown(sockets, "postgres")
        subprocess.run(_as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                                     "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, capture_output=True, timeout=120)
        for attempt in range(3):
            port = free_port()
            options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=300"
            result = subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-o", options,
                                                  "-l", str(folder / "server.log"), "-w", "-t", "60", "start"]),
                                    check=False, capture_output=True, text=True, timeout=90)
            if result.returncode == 0:
                break
            if attempt == 2:
                raise AssertionError(f"PostgreSQL did not start: {result.stderr}")
        server = cls(folder, port)
        wait_until(lambda: port_open(port), timeout_s=30)
        with server._superuser("postgres") as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' CREATEDB")
        return server

    def _superuser(self, database: str) -> psycopg.Connection:
        return psycopg.connect(host=str(self.folder / "sockets"), port=self.port, user="postgres",
                               dbname=database, autocommit=True)

    def create_database(self) -> str:
        """A new empty database owned by the ``hemex`` role; its URL (no password)."""
        name = f"hemex_test_{uuid.uuid4().hex[:12]}"
        with self._superuser("postgres") as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w",
                                     "stop"]), check=False, capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
