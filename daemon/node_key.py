"""The node's own secret key: it signs alert acknowledgement links, makes their short
codes and the stable pseudonyms of exported training sets.

Configured (``[alerts.acknowledgement] secret`` or ``secret_file``), or else generated
once into ``<data_dir>/node.key`` (0600; back it up with the database: a new key breaks
every link sent and changes every pseudonym). Each use derives its own key from it, so
a link token never reveals a pseudonym key and the other way round.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from daemon.config import Settings, read_secret
from domain.durable_files import write_atomically


def node_key(settings: Settings) -> bytes:
    """The configured secret, or the generated one (made now if it does not exist)."""
    ack = settings.alerts.acknowledgement
    configured = read_secret(ack.secret, ack.secret_file)
    if configured:
        return configured.encode("utf-8")
    path = Path(settings.node_key_path)
    if not path.exists():
        write_atomically(path, secrets.token_hex(32).encode("ascii") + b"\n")
    return path.read_bytes().strip()


def derived_key(key: bytes, purpose: str) -> bytes:
    """A key for one ``purpose`` (e.g. "alert-ack", "pseudonym") from the node key."""
    return hmac.new(key, b"hemex:" + purpose.encode("utf-8"), hashlib.sha256).digest()
