"""Durable storage of accepted HL7 messages: the file and its row, before the ACK."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from daemon.clinical.hl7_parsing import CheckedMessage
from daemon.state.database import Database
from domain.durable_files import ensure_private_dir, free_bytes, write_atomically
from domain.errors import StorageFullError


@dataclass(frozen=True)
class StoredMessage:
    """Row id of the message; ``duplicate`` when (sender, control id) was already stored."""

    message_id: int
    duplicate: bool


class MessageStore:
    """Writes each message to ``<data_dir>/hl7/<date>/<uuid>.hl7`` and records it.

    The duplicate check, the file write and the insert share one immediate transaction,
    so a message is recorded exactly once even when a sender retries on another
    connection at the same moment.
    """

    def __init__(self, db: Database, data_dir: Path, min_free_bytes: int) -> None:
        self._db = db
        self._root = Path(data_dir) / "hl7"
        self._min_free_bytes = min_free_bytes

    def store(self, checked: CheckedMessage, raw: bytes) -> StoredMessage:
        """Store ``raw`` (the bytes as received) unless it is a duplicate.

        Raises
        ------
        StorageFullError
            Free space is below the configured minimum or the disk filled up.
        """
        header = checked.header
        folder = ensure_private_dir(self._root / datetime.now().strftime("%Y-%m-%d"))
        with self._db.transaction() as conn:
            row = conn.execute("SELECT id FROM hl7_messages WHERE sender = ? AND control_id = ?",
                               (header.sender, header.control_id)).fetchone()
            if row is not None:
                return StoredMessage(int(row["id"]), duplicate=True)
            if free_bytes(folder) < self._min_free_bytes:
                raise StorageFullError("free disk space below hl7.min_free_disk_mb")
            path = folder / f"{uuid.uuid4()}.hl7"
            write_atomically(path, raw)
            try:
                message_id = conn.execute(
                    "INSERT INTO hl7_messages(sender, control_id, message_type, version, path, size_bytes,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (header.sender, header.control_id, header.type_name, header.version, str(path),
                     len(raw), time.time()),
                ).lastrowid
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        assert message_id is not None
        return StoredMessage(int(message_id), duplicate=False)

    def read(self, message_id: int) -> bytes:
        """The stored bytes of a message."""
        row = self._db.query("SELECT path FROM hl7_messages WHERE id = ?", (message_id,))[0]
        return Path(row["path"]).read_bytes()
