"""The append-only audit log: who sent what, when, and where results went.

It is the one place identifiers (UIDs, AE titles, peer addresses, destinations) are
written; the operational log names studies by their non-PHI handle only. One JSON
object a line, file mode 0600, never rotated by the node (the site's log retention
applies). The node makes one ``AuditLog`` and hands it to every stage that records.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from domain.durable_files import ensure_private_dir

AUDIT_FILE_NAME = "audit.log"


class AuditLog:
    """Appends audit records to ``log_dir/audit.log``, one JSON object a line."""

    def __init__(self, log_dir: Path) -> None:
        ensure_private_dir(log_dir)
        self.path = log_dir / AUDIT_FILE_NAME
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, action: str, **fields: object) -> None:
        """Append one record: ``action`` (e.g. ``dicom-received``) and its fields."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, **fields}
        line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
