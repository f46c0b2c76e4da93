"""HL7 messages accepted over MLLP, once per (sender, control id) (``hl7_messages``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Row, text


@dataclass(frozen=True)
class StoredMessage:
    """A stored message: who sent it, where its bytes are, and whether it was applied."""

    id: int
    sender: str
    control_id: str
    message_type: str
    path: Path
    received_at: float
    processed_at: float | None
    process_error: str | None

    @property
    def processed(self) -> bool:
        return self.processed_at is not None


def _message(row: Row) -> StoredMessage:
    return StoredMessage(int(row.id), row.sender, row.control_id, row.message_type, Path(row.path),
                         row.received_at, row.processed_at, row.process_error)


class Hl7MessageRepository:
    """The ``hl7_messages`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def find(self, sender: str, control_id: str) -> int | None:
        """The id of the message ``sender`` sent with ``control_id``, or None."""
        row = self._conn.execute(text(
            "SELECT id FROM hl7_messages WHERE sender = :sender AND control_id = :control_id"),
            {"sender": sender, "control_id": control_id}).first()
        return None if row is None else int(row.id)

    def with_control_id(self, control_id: str) -> list[int]:
        """Ids of the stored messages with this control id, whoever sent them."""
        rows = self._conn.execute(text("SELECT id FROM hl7_messages WHERE control_id = :control_id ORDER BY id"),
                                  {"control_id": control_id})
        return [int(row.id) for row in rows]

    def add(self, sender: str, control_id: str, message_type: str, version: str, path: Path,
            size_bytes: int, now: float) -> int | None:
        """Record a stored message; returns its id, or None when (sender, control id) is
        recorded already (another node stored the same message a moment before)."""
        value = self._conn.execute(text(
            "INSERT INTO hl7_messages(sender, control_id, message_type, version, path, size_bytes, received_at)"
            " VALUES (:sender, :control_id, :message_type, :version, :path, :size, :now)"
            " ON CONFLICT(sender, control_id) DO NOTHING RETURNING id"),
            {"sender": sender, "control_id": control_id, "message_type": message_type, "version": version,
             "path": str(path), "size": size_bytes, "now": now}).scalar()
        return None if value is None else int(value)

    def get(self, message_id: int) -> StoredMessage | None:
        row = self._conn.execute(text("SELECT * FROM hl7_messages WHERE id = :id"), {"id": message_id}).first()
        return None if row is None else _message(row)

    def received_since(self, since: float = 0.0) -> list[StoredMessage]:
        """Messages received at or after ``since``, in arrival order."""
        rows = self._conn.execute(text("SELECT * FROM hl7_messages WHERE received_at >= :since ORDER BY id"),
                                  {"since": since})
        return [_message(row) for row in rows]

    def unprocessed(self) -> list[int]:
        """Messages stored but not yet applied, in arrival order."""
        rows = self._conn.execute(text("SELECT id FROM hl7_messages WHERE processed_at IS NULL ORDER BY id"))
        return [int(row.id) for row in rows]

    def mark_processed(self, message_id: int, now: float, error: str | None = None) -> bool:
        """The message was applied (or could not be: ``error`` says why, kept on its row).

        False when it was marked before: within a transaction that applies the message,
        calling this first makes sure one node applies it, once.
        """
        return self._conn.execute(text(
            "UPDATE hl7_messages SET processed_at = :now, process_error = :error"
            " WHERE id = :id AND processed_at IS NULL"),
            {"now": now, "error": error, "id": message_id}).rowcount == 1

    def counts(self) -> tuple[int, int]:
        """(messages stored, messages not yet applied)."""
        row = self._conn.execute(text(
            "SELECT COUNT(*) AS stored, SUM(CASE WHEN processed_at IS NULL THEN 1 ELSE 0 END) AS unprocessed"
            " FROM hl7_messages")).one()
        return int(row.stored), int(row.unprocessed or 0)
