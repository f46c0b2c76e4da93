"""Named leases: a task that one node at a time runs holds one (``leases`` table)."""

from __future__ import annotations

from sqlalchemy import Connection, text


class LeaseRepository:
    """The ``leases`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def try_acquire(self, name: str, owner: str, now: float, lease_s: float) -> bool:
        """Take (or renew) the lease ``name`` until ``now + lease_s``; False when another
        owner holds it and it has not run out."""
        return self._conn.execute(text(
            "INSERT INTO leases(name, owner, expires_at) VALUES (:name, :owner, :until)"
            " ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at"
            " WHERE leases.owner = excluded.owner OR leases.expires_at < :now"),
            {"name": name, "owner": owner, "until": now + lease_s, "now": now}).rowcount == 1

    def release(self, name: str, owner: str) -> None:
        """Give the lease up (only its owner can)."""
        self._conn.execute(text("DELETE FROM leases WHERE name = :name AND owner = :owner"),
                           {"name": name, "owner": owner})
