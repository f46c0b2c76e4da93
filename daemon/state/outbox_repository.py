"""The outbox: every outbound delivery is a row that survives restarts (``outbox`` table)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Connection, Row, text

from daemon.state.locking import for_update_skip_locked
from daemon.state.uid_lists import in_list_batches
from domain.delivery import Delivery, DeliveryRequest, DeliveryState


def _delivery(row: Row) -> Delivery:
    return Delivery(int(row.id), row.channel, row.destination, row.item_key, Path(row.path), row.study_uid,
                    DeliveryState(row.state), int(row.attempts), row.next_attempt_at, row.last_error,
                    row.created_at, row.delivered_at)




class OutboxRepository:
    """The ``outbox`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def enqueue(self, request: DeliveryRequest, now: float) -> bool:
        """Queue ``request``; False when the same item was queued for its destination before."""
        return self._conn.execute(text(
            "INSERT INTO outbox(channel, destination, item_key, path, study_uid, next_attempt_at, created_at)"
            " VALUES (:channel, :destination, :item_key, :path, :study_uid, :now, :now)"
            " ON CONFLICT(channel, destination, item_key) DO NOTHING"),
            {"channel": request.channel.value, "destination": request.destination,
             "item_key": request.item_key, "path": str(request.path), "study_uid": request.study_uid,
             "now": now}).rowcount == 1

    def id_of(self, request: DeliveryRequest) -> int | None:
        """The id of the item queued for ``request``'s channel, destination and key, or None."""
        value = self._conn.execute(text(
            "SELECT id FROM outbox WHERE channel = :channel AND destination = :destination AND item_key = :key"),
            {"channel": request.channel.value, "destination": request.destination,
             "key": request.item_key}).scalar()
        return None if value is None else int(value)

    def claim_due(self, now: float, owner: str, lease_s: float, limit: int | None = None) -> list[Delivery]:
        """Claim the pending items whose time has come for ``owner``, oldest first.

        An item another node claimed is skipped until its lease runs out (that node
        died mid-pass); one ``owner`` claimed itself is not (a node's passes do not
        overlap, so such a claim was left by this node before it restarted). On
        PostgreSQL the rows are locked while they are claimed.
        """
        rows = self._conn.execute(text(
            "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= :now"
            " AND (lease_until IS NULL OR lease_until < :now OR lease_owner = :owner)"
            " ORDER BY next_attempt_at, id"
            + (" LIMIT :limit" if limit is not None else "") + for_update_skip_locked(self._conn)),
            {"now": now, "limit": limit, "owner": owner}).all()
        for row in rows:
            self._conn.execute(text("UPDATE outbox SET lease_owner = :owner, lease_until = :until WHERE id = :id"),
                               {"owner": owner, "until": now + lease_s, "id": row.id})
        return [_delivery(row) for row in rows]

    def mark_delivered(self, item_id: int, now: float) -> None:
        self._conn.execute(text(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = :now,"
            " last_error = NULL, lease_owner = NULL, lease_until = NULL WHERE id = :id"), {"now": now, "id": item_id})

    def mark_retry(self, item_id: int, attempts: int, reason: str, next_attempt_at: float) -> None:
        self._conn.execute(text(
            "UPDATE outbox SET attempts = :attempts, next_attempt_at = :next_at, last_error = :reason,"
            " lease_owner = NULL, lease_until = NULL WHERE id = :id"),
            {"attempts": attempts, "next_at": next_attempt_at, "reason": reason, "id": item_id})

    def mark_dead(self, item_id: int, attempts: int, reason: str) -> None:
        self._conn.execute(text(
            "UPDATE outbox SET state = 'dead', attempts = :attempts, last_error = :reason, lease_owner = NULL,"
            " lease_until = NULL WHERE id = :id"), {"attempts": attempts, "reason": reason, "id": item_id})

    def items(self, state: DeliveryState | None = None, study_uid: str | None = None) -> list[Delivery]:
        """Every item (or those in ``state``, of ``study_uid``), by id."""
        where, params = [], {}
        if state is not None:
            where.append("state = :state")
            params["state"] = state.value
        if study_uid is not None:
            where.append("study_uid = :study_uid")
            params["study_uid"] = study_uid
        sql = "SELECT * FROM outbox" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_delivery(row) for row in self._conn.execute(text(sql), params)]

    def retry_dead(self, now: float, ids: Sequence[int] | None = None) -> int:
        """Queue dead items (all, or those ``ids``) again, due now; returns how many."""
        if ids is None:
            return int(self._conn.execute(text(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = :now"
                " WHERE state = 'dead'"), {"now": now}).rowcount)
        count = 0
        for item_id in ids:
            count += int(self._conn.execute(text(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = :now"
                " WHERE state = 'dead' AND id = :id"), {"now": now, "id": int(item_id)}).rowcount)
        return count

    def counts_by_study(self, study_uids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{study_uid: {state: n}}`` for the studies that have outbox items (the console)."""
        counts: dict[str, dict[str, int]] = {}
        for marks, params in in_list_batches(study_uids):
            rows = self._conn.execute(text(
                f"SELECT study_uid, state, COUNT(*) AS n FROM outbox WHERE study_uid IN ({marks})"
                " GROUP BY study_uid, state"), params)
            for row in rows:
                counts.setdefault(row.study_uid, {})[row.state] = int(row.n)
        return counts

    def counts_by_state(self) -> dict[str, int]:
        """``{"pending": n, "delivered": n, "dead": n}`` (states with no item are absent)."""
        rows = self._conn.execute(text("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state"))
        return {row.state: int(row.n) for row in rows}

    def unsettled_for(self, study_uid: str) -> int:
        """Items of the study not delivered (pending or dead): its files are still needed."""
        return int(self._conn.execute(text(
            "SELECT COUNT(*) FROM outbox WHERE study_uid = :uid AND state != 'delivered'"),
            {"uid": study_uid}).scalar_one())
