"""The node database: one engine, transactions that hand out repositories, migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL``, so a committed
transaction survives power loss and the listener may acknowledge after its commit. Write
transactions start with ``BEGIN IMMEDIATE`` (they take the write lock at once instead of
failing to upgrade a read lock later); read transactions are plain deferred snapshots.

PostgreSQL (``database.url``, several nodes on one database) runs through psycopg 3 with
SQLAlchemy's connection pool, READ COMMITTED; where two nodes could race, repositories
lock the rows they decide on (``SELECT ... FOR UPDATE [SKIP LOCKED]``). Its commits are
durable when PostgreSQL's own ``synchronous_commit`` is on (its default).

Every query lives in a repository (``Repositories``); nothing else sees SQL or rows.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text

from daemon.config import Settings, read_secret
from daemon.state.repositories import Repositories
from domain.durable_files import ensure_private_dir

MIGRATIONS = Path(__file__).with_name("migrations")
_BUSY_TIMEOUT_MS = 30_000


class Database:
    """The node's database, safe to share between threads.

    Parameters
    ----------
    target
        A SQLite file (created 0600 in a 0700 folder, since it holds PHI), or a
        SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
    password
        The PostgreSQL password (kept out of the URL, so it is never logged).
    pool_size, connect_timeout_s
        PostgreSQL connection pool size and connection timeout.
    migrate
        Bring the schema to the newest revision first (the node does).
    """

    def __init__(self, target: Path | str, *, password: str | None = None, pool_size: int = 10,
                 connect_timeout_s: float = 10.0, migrate: bool = True) -> None:
        url = make_url(str(target)) if "://" in str(target) else make_url(f"sqlite:///{target}")
        self.dialect = url.get_backend_name()
        if self.dialect == "sqlite":
            self.path: Path | None = Path(str(url.database))
            ensure_private_dir(self.path.parent)
            # SQLite creates the file with the umask's mode and gives -wal/-shm the same
            # mode as the database, so create it private first.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self.engine = _sqlite_engine(self.path)
        elif self.dialect == "postgresql":
            self.path = None
            self.engine = _postgresql_engine(url.set(drivername="postgresql+psycopg", password=password),
                                             pool_size, connect_timeout_s)
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")
        self.statement_time = StatementTime()
        self.statement_time.watch(self.engine)
        if migrate:
            upgrade_to_newest(self.engine)

    @classmethod
    def for_settings(cls, settings: Settings, *, migrate: bool = True) -> Database:
        """The database ``settings.database`` configures (SQLite in the data dir by default)."""
        db = settings.database
        password = read_secret(db.password, db.password_file)
        return cls(settings.database_url, password=password, pool_size=db.pool_size,
                   connect_timeout_s=db.connect_timeout_s, migrate=migrate)

    @property
    def description(self) -> str:
        """Which database this is, for logs (no password)."""
        return self.engine.url.render_as_string(hide_password=True)

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


class StatementTime:
    """How many SQL statements this process ran, and the seconds they took (a metric:
    the database's share of the node's time, e.g. with several nodes on PostgreSQL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.statements = 0
        self.seconds = 0.0

    def watch(self, engine: Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Connection, *_: object) -> None:
            conn.info.setdefault("hemex_started", []).append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Connection, *_: object) -> None:
            elapsed = time.perf_counter() - conn.info["hemex_started"].pop()
            with self._lock:
                self.statements += 1
                self.seconds += elapsed

        @event.listens_for(engine, "handle_error")
        def _failed(context: Any) -> None:
            started = context.connection.info.get("hemex_started") if context.connection is not None else None
            if started:
                started.pop()


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


def _postgresql_engine(url: URL, pool_size: int, connect_timeout_s: float) -> Engine:
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=60,
        # A connection the server dropped (restart, failover) is replaced, not handed out.
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(connect_timeout_s)), "application_name": "hemex"},
    )


# Nodes starting together on one PostgreSQL database migrate it one at a time.
_MIGRATION_LOCK = 0x68656D6578  # "hemex"


def upgrade_to_newest(engine: Engine) -> None:
    """Apply every migration the database lacks (alembic ``upgrade head``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect().execution_options(hemex_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
