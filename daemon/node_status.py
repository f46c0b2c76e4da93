"""What the IT person asks the node: counts by state, dead letters, and retries."""

from __future__ import annotations

from daemon.config import Settings
from daemon.state.database import Database


def _open(settings: Settings) -> Database:
    if not settings.database_path.exists():
        raise FileNotFoundError(f"no node database at {settings.database_path}")
    return Database(settings.database_path)


def node_status(settings: Settings) -> dict[str, dict[str, int]]:
    """Counts of studies, series, jobs and outbox items by state."""
    db = _open(settings)
    status = {}
    for table in ("studies", "series", "jobs", "outbox"):
        rows = db.query(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state")
        status[table] = {row["state"]: row["n"] for row in rows}
    status["instances"] = {"stored": db.query("SELECT COUNT(*) AS n FROM instances")[0]["n"]}
    return status


def dead_letters(settings: Settings) -> list[dict[str, object]]:
    """Deliveries that permanently failed, with the reason (no PHI: ids and channels)."""
    db = _open(settings)
    rows = db.query("SELECT id, channel, destination, item_key, attempts, last_error, created_at"
                    " FROM outbox WHERE state = 'dead' ORDER BY id")
    return [dict(row) for row in rows]


def retry_dead_letters(settings: Settings, ids: list[int] | None = None) -> int:
    """Put dead-letter items back in the queue (after the peer was fixed)."""
    db = _open(settings)
    with db.transaction() as conn:
        if ids:
            marks = ",".join("?" for _ in ids)
            return conn.execute(f"UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0"
                                f" WHERE state = 'dead' AND id IN ({marks})", ids).rowcount
        return conn.execute("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0"
                            " WHERE state = 'dead'").rowcount
