"""The key that signs the console's session cookies and CSRF tokens.

Kept in the data directory (0600, like the database), so that a restart of the node
does not log everyone out, and never leaves the node.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from domain.durable_files import write_atomically

SESSION_KEY_FILE = "console-session.key"
KEY_BYTES = 32


def load_or_create_session_key(data_dir: Path) -> bytes:
    """The node's session key, made on first use."""
    path = Path(data_dir) / SESSION_KEY_FILE
    if path.is_file():
        key = path.read_bytes()
        if len(key) >= KEY_BYTES:
            return key
    key = secrets.token_bytes(KEY_BYTES)
    write_atomically(path, key)
    return key
