"""The node database a test opens: the SQLite file it names, or, when the suite runs on
PostgreSQL (``HEMEX_TEST_DATABASE=postgresql``, see tests/conftest.py), the test's own
PostgreSQL database, which the node's own settings (``HEMEX_DATABASE__URL``) point at too."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.state.database import Database


def on_postgresql() -> bool:
    """True when this run of the suite keeps the node's state in PostgreSQL."""
    return os.environ.get("HEMEX_TEST_DATABASE", "sqlite") == "postgresql"


def database_target(sqlite_path: Path) -> Path | str:
    """Where a test's database is: ``sqlite_path``, or the test's PostgreSQL URL."""
    return os.environ["HEMEX_DATABASE__URL"] if on_postgresql() else sqlite_path


def open_database_at(target: Path | str) -> Database:
    """A database at an explicit SQLite path or PostgreSQL URL (for fixtures wider than
    one test, which the per-test ``HEMEX_DATABASE__URL`` does not reach)."""
    from tests.support.postgres import PASSWORD

    return Database(target, password=PASSWORD if isinstance(target, str) else None)


def open_database(sqlite_path: Path, *, migrate: bool = True) -> Database:
    """The test's database (the same one every time within a test, as a restart sees it)."""
    return Database(database_target(sqlite_path), password=os.environ.get("HEMEX_DATABASE__PASSWORD"),
                    migrate=migrate)
