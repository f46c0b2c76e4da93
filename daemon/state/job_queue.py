"""A durable job table: each hand-off between stages is a row, so a restart resumes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from sqlite3 import Connection

from daemon.state.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    key: str
    attempts: int


class JobQueue:
    """Pending jobs keyed by (kind, key); at most one live row per key."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def enqueue(self, kind: str, key: str, delay_s: float = 0.0, *, conn: Connection | None = None) -> None:
        """Queue (or re-arm) a job; an already pending or running one keeps its place
        unless the new run time is earlier.

        ``conn`` queues it inside the caller's open transaction, so the job exists if and
        only if what called for it was committed.
        """
        if conn is not None:
            self._upsert(conn, kind, key, delay_s)
            return
        with self._db.transaction() as own:
            self._upsert(own, kind, key, delay_s)

    def _upsert(self, conn: Connection, kind: str, key: str, delay_s: float) -> None:
        now = self._clock()
        conn.execute(
            "INSERT INTO jobs(kind, key, state, run_after, created_at, updated_at)"
            " VALUES (?, ?, 'pending', ?, ?, ?)"
            " ON CONFLICT(kind, key) DO UPDATE SET"
            "   state = CASE WHEN jobs.state = 'running' THEN 'running' ELSE 'pending' END,"
            "   run_after = CASE WHEN jobs.state = 'pending' THEN MIN(jobs.run_after, excluded.run_after)"
            "                    ELSE excluded.run_after END,"
            "   attempts = CASE WHEN jobs.state IN ('done', 'failed') THEN 0 ELSE jobs.attempts END,"
            "   updated_at = excluded.updated_at",
            (kind, key, now + delay_s, now, now),
        )

    def claim_next(self) -> Job | None:
        """Mark the oldest due pending job running and return it."""
        now = self._clock()
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT id, kind, key, attempts FROM jobs WHERE state = 'pending' AND run_after <= ?"
                " ORDER BY run_after, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (now, row["id"]),
            )
        return Job(row["id"], row["kind"], row["key"], row["attempts"] + 1)

    def finish(self, job: Job) -> None:
        self._set(job, "done", None)

    def fail(self, job: Job, reason: str, retry_in_s: float | None = None) -> None:
        """Record a failure; with ``retry_in_s`` the job runs again later."""
        if retry_in_s is None:
            self._set(job, "failed", reason)
            return
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'pending', last_error = ?, run_after = ?, updated_at = ?"
                " WHERE id = ?",
                (reason, self._clock() + retry_in_s, self._clock(), job.id),
            )

    def resume_interrupted(self) -> int:
        """After a crash: jobs left running go back to pending. Returns how many."""
        with self._db.transaction() as conn:
            return conn.execute(
                "UPDATE jobs SET state = 'pending', updated_at = ? WHERE state = 'running'",
                (self._clock(),),
            ).rowcount

    def state_of(self, kind: str, key: str) -> str | None:
        rows = self._db.query("SELECT state FROM jobs WHERE kind = ? AND key = ?", (kind, key))
        return rows[0]["state"] if rows else None

    def _set(self, job: Job, state: str, reason: str | None) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = ?, last_error = ?, updated_at = ? WHERE id = ?",
                (state, reason, self._clock(), job.id),
            )
