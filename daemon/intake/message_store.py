"""Durable storage of accepted HL7 messages: the file and its row, before the ACK."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from daemon.intake.hl7_parsing import CheckedMessage
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

    The duplicate check, the file write and the insert share one write transaction, so a
    message is recorded exactly once even when a sender retries on another connection at
    the same moment.
    """

    def __init__(self, db: Database, data_dir: Path, min_free_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._root = Path(data_dir) / "hl7"
        self._min_free_bytes = min_free_bytes
        self._clock = clock

    def store(self, checked: CheckedMessage, raw: bytes) -> StoredMessage:
        """Store ``raw`` (the bytes as received) unless it is a duplicate.

        Raises
        ------
        StorageFullError
            Free space is below the configured minimum or the disk filled up.
        """
        header = checked.header
        folder = ensure_private_dir(self._root / datetime.now().strftime("%Y-%m-%d"))
        with self._db.transaction() as repos:
            known = repos.hl7_messages.find(header.sender, header.control_id)
            if known is not None:
                return StoredMessage(known, duplicate=True)
            if free_bytes(folder) < self._min_free_bytes:
                raise StorageFullError("free disk space below hl7.min_free_disk_mb")
            path = folder / f"{uuid.uuid4()}.hl7"
            write_atomically(path, raw)
            try:
                message_id = repos.hl7_messages.add(header.sender, header.control_id, header.type_name,
                                                    header.version, path, len(raw), self._clock())
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            if message_id is None:  # another node recorded it between the check and here
                path.unlink(missing_ok=True)
                known = repos.hl7_messages.find(header.sender, header.control_id)
                assert known is not None
                return StoredMessage(known, duplicate=True)
        return StoredMessage(message_id, duplicate=False)
