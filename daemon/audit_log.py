"""The append-only audit log: who sent what, when, and where results went.

It is the one place identifiers (UIDs, AE titles, destinations) are written; the
operational log names studies by their non-PHI handle only. One JSON object a line,
file mode 0600, never rotated by the node (the site's log retention applies).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from domain.durable_files import ensure_private_dir

_audit_logger = logging.getLogger("hemex.audit")
_audit_logger.propagate = False


def configure_audit_log(log_dir: Path) -> Path:
    """Send audit records to ``log_dir/audit.log`` (append-only)."""
    ensure_private_dir(log_dir)
    path = log_dir / "audit.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.close(fd)
    for handler in list(_audit_logger.handlers):
        _audit_logger.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    _audit_logger.addHandler(handler)
    _audit_logger.setLevel(logging.INFO)
    return path


def audit(action: str, **fields: object) -> None:
    """Append one audit record (no-op until configure_audit_log is called)."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, **fields}
    _audit_logger.info(json.dumps(record, default=str, sort_keys=True))
