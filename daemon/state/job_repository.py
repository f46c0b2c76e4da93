"""The durable job table: each hand-off between stages is a row, so a restart resumes.

At most one row per (kind, key). Queueing a job that is pending keeps its place unless
the new run time is earlier; queueing one that is running marks it to run once more
when the current run ends (new images or data arrived while it worked); queueing one
that is done or failed makes it pending again.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from daemon.state.locking import for_update_skip_locked
from domain.jobs import Job, JobKind, JobState

_UPSERT = text(
    "INSERT INTO jobs(kind, key, state, run_after, created_at, updated_at)"
    " VALUES (:kind, :key, 'pending', :run_after, :now, :now)"
    " ON CONFLICT(kind, key) DO UPDATE SET"
    "   state = CASE WHEN jobs.state = 'running' THEN 'running' ELSE 'pending' END,"
    "   rerun_requested = CASE WHEN jobs.state = 'running' THEN 1 ELSE 0 END,"
    "   run_after = CASE WHEN jobs.state = 'pending' AND jobs.run_after < excluded.run_after"
    "                    THEN jobs.run_after ELSE excluded.run_after END,"
    "   attempts = CASE WHEN jobs.state IN ('done', 'failed') THEN 0 ELSE jobs.attempts END,"
    "   updated_at = excluded.updated_at")


class JobRepository:
    """The ``jobs`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def enqueue(self, kind: JobKind, key: str, run_after: float, now: float) -> None:
        """Queue (or re-arm) the job ``kind``/``key`` to run at or after ``run_after``."""
        self._conn.execute(_UPSERT, {"kind": kind.value, "key": key, "run_after": run_after, "now": now})

    def claim_next(self, now: float, owner: str, lease_s: float,
                   kinds: tuple[JobKind, ...] | None = None) -> Job | None:
        """Claim the oldest due job for ``owner`` until ``now + lease_s``; None when none is due.

        Due: pending and past its time, or running under a lease that ran out (its node
        died). On PostgreSQL the row is locked and rows other nodes are claiming are
        skipped, so two nodes never claim one job.
        """
        kind_filter = ""
        params: dict[str, object] = {"now": now}
        if kinds is not None:
            kind_filter = " AND kind IN (" + ", ".join(f":k{i}" for i in range(len(kinds))) + ")"
            params.update({f"k{i}": k.value for i, k in enumerate(kinds)})
        row = self._conn.execute(text(
            "SELECT id, kind, key, attempts FROM jobs WHERE ((state = 'pending' AND run_after <= :now)"
            " OR (state = 'running' AND lease_until < :now))" + kind_filter
            + " ORDER BY run_after, id LIMIT 1" + for_update_skip_locked(self._conn)), params).first()
        if row is None:
            return None
        self._conn.execute(text(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, rerun_requested = 0,"
            " lease_owner = :owner, lease_until = :until, updated_at = :now WHERE id = :id"),
            {"owner": owner, "until": now + lease_s, "now": now, "id": row.id})
        return Job(int(row.id), JobKind(row.kind), row.key, int(row.attempts) + 1)

    def renew(self, job: Job, owner: str, until: float) -> bool:
        """Extend ``owner``'s lease on a running job; False when the lease was lost."""
        return self._conn.execute(text(
            "UPDATE jobs SET lease_until = :until WHERE id = :id AND state = 'running' AND lease_owner = :owner"),
            {"until": until, "id": job.id, "owner": owner}).rowcount == 1

    def finish(self, job: Job, owner: str, now: float) -> bool:
        """The run succeeded: done, or pending again if it was queued while it ran.

        False (nothing changed) when ``owner`` no longer holds the job's lease: another
        node took it over and its outcome counts.
        """
        return self._conn.execute(text(
            "UPDATE jobs SET state = CASE WHEN rerun_requested = 1 THEN 'pending' ELSE 'done' END,"
            " attempts = CASE WHEN rerun_requested = 1 THEN 0 ELSE attempts END,"
            " rerun_requested = 0, last_error = NULL, lease_owner = NULL, lease_until = NULL,"
            " updated_at = :now WHERE id = :id AND lease_owner = :owner"),
            {"now": now, "id": job.id, "owner": owner}).rowcount == 1

    def fail(self, job: Job, owner: str, reason: str, now: float, retry_at: float | None = None) -> bool:
        """Record a failed run; it runs again at ``retry_at``, or at once if it was queued
        while it ran, else it is failed for good. True when it is failed for good."""
        params = {"retry_at": retry_at, "now": now, "reason": reason, "id": job.id, "owner": owner}
        if retry_at is not None:
            self._conn.execute(text(
                "UPDATE jobs SET state = 'pending', run_after = :retry_at, last_error = :reason,"
                " rerun_requested = 0, lease_owner = NULL, lease_until = NULL, updated_at = :now"
                " WHERE id = :id AND lease_owner = :owner"), params)
            return False
        self._conn.execute(text(
            "UPDATE jobs SET state = CASE WHEN rerun_requested = 1 THEN 'pending' ELSE 'failed' END,"
            " run_after = :now, last_error = :reason,"
            " attempts = CASE WHEN rerun_requested = 1 THEN 0 ELSE attempts END,"
            " rerun_requested = 0, lease_owner = NULL, lease_until = NULL, updated_at = :now"
            " WHERE id = :id AND lease_owner = :owner"), params)
        return self.state_of(job.kind, job.key) is JobState.FAILED

    def resume_interrupted(self, owner: str, now: float) -> int:
        """At start-up: jobs this node (``owner``) left running run again. Returns how many.

        Other nodes' running jobs are left to their leases; rows without an owner were
        left by a version without leases.
        """
        return int(self._conn.execute(text(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = :now"
            " WHERE state = 'running' AND (lease_owner = :owner OR lease_owner IS NULL)"),
            {"now": now, "owner": owner}).rowcount)

    def state_of(self, kind: JobKind, key: str) -> JobState | None:
        """The job's state, or None when it was never queued."""
        row = self._conn.execute(text("SELECT state FROM jobs WHERE kind = :kind AND key = :key"),
                                 {"kind": kind.value, "key": key}).first()
        return None if row is None else JobState(row.state)

    def last_error(self, kind: JobKind, key: str) -> str | None:
        """Why the job last failed, or None."""
        row = self._conn.execute(text("SELECT last_error FROM jobs WHERE kind = :kind AND key = :key"),
                                 {"kind": kind.value, "key": key}).first()
        return None if row is None else row.last_error

    def open_for(self, key: str) -> int:
        """Jobs of ``key`` (a study) that are pending or running."""
        return int(self._conn.execute(text(
            "SELECT COUNT(*) FROM jobs WHERE key = :key AND state IN ('pending', 'running')"),
            {"key": key}).scalar_one())

    def next_due_at(self) -> float | None:
        """When the earliest pending job is due, or None when none is pending."""
        value = self._conn.execute(text("SELECT MIN(run_after) FROM jobs WHERE state = 'pending'")).scalar()
        return None if value is None else float(value)
