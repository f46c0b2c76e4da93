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
from collections import OrderedDict
from collections.abc import Callable
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


class Throttle:
    """At most one report per key (e.g. a peer address and a reason) per ``interval_s``.

    A peer that opens thousands of connections a second to be refused must not fill the
    operational log and the audit log with as many lines: the first refusal is reported,
    the next ones within the interval are counted, and the next report carries the count.
    """

    def __init__(self, interval_s: float = 10.0, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (reported at, suppressed)

    def admit(self, key: str) -> int | None:
        """None: suppress this report; else report it, with this many suppressed since the last."""
        now = self._clock()
        with self._lock:
            reported_at, suppressed = self._seen.get(key, (float("-inf"), 0))
            if now - reported_at < self._interval_s:
                self._seen[key] = (reported_at, suppressed + 1)
                return None
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
            return suppressed
