"""The node database: one engine, transactions that hand out repositories, migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL``, so a committed
transaction survives power loss and the listener may acknowledge after its commit. Write
transactions start with ``BEGIN IMMEDIATE`` (they take the write lock at once instead of
failing to upgrade a read lock later); read transactions are plain deferred snapshots.
Every query lives in a repository (``Repositories``); nothing else sees SQL or rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event

from daemon.state.repositories import Repositories
from domain.durable_files import ensure_private_dir

MIGRATIONS = Path(__file__).with_name("migrations")
_BUSY_TIMEOUT_MS = 30_000


class Database:
    """The node's database, safe to share between threads.

    Parameters
    ----------
    path
        The SQLite file (created 0600 in a 0700 folder, since it holds PHI).
    migrate
        Bring the schema to the newest revision first (the node does; read-only tools
        such as ``hemex status`` refuse a database that needs it).
    """

    def __init__(self, path: Path, *, migrate: bool = True) -> None:
        self.path = Path(path)
        ensure_private_dir(self.path.parent)
        # SQLite creates the file with the umask's mode and gives -wal/-shm the same
        # mode as the database, so create it private first.
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.engine = _sqlite_engine(self.path)
        if migrate:
            upgrade_to_newest(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Repositories]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self.engine.connect().execution_options(hemex_write=True) as conn, conn.begin():
            yield Repositories(conn)

    @contextmanager
    def reading(self) -> Iterator[Repositories]:
        """A read-only snapshot: every query in the block sees the same committed state."""
        with self.engine.connect() as conn, conn.begin() as tx:
            yield Repositories(conn)
            tx.rollback()

    def close(self) -> None:
        """Close every pooled connection (a new transaction opens new ones)."""
        self.engine.dispose()


def _sqlite_engine(path: Path) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": _BUSY_TIMEOUT_MS / 1000},
        # One connection per concurrent user: association threads, workers, scrapes.
        pool_size=32, max_overflow=32, pool_timeout=60,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: object) -> None:
        # pysqlite's own BEGIN handling is switched off; _on_begin says what to begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON",
                       f"busy_timeout = {_BUSY_TIMEOUT_MS}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("hemex_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def upgrade_to_newest(engine: Engine) -> None:
    """Apply every migration the database lacks (alembic ``upgrade head``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect().execution_options(hemex_write=True) as conn, conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
