"""Row locking where two nodes on one PostgreSQL database could race.

SQLite write transactions are exclusive already (``BEGIN IMMEDIATE``), so these clauses
are empty there. On PostgreSQL, ``FOR UPDATE`` serialises the transactions that decide
on the same row, and ``SKIP LOCKED`` lets nodes claim different rows side by side.
"""

from __future__ import annotations

from sqlalchemy import Connection


def on_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def for_update(conn: Connection) -> str:
    """`` FOR UPDATE`` on PostgreSQL (lock the rows read until commit), else nothing."""
    return " FOR UPDATE" if on_postgresql(conn) else ""


def for_update_skip_locked(conn: Connection) -> str:
    """`` FOR UPDATE SKIP LOCKED`` on PostgreSQL (claim rows no other node holds), else nothing."""
    return " FOR UPDATE SKIP LOCKED" if on_postgresql(conn) else ""
