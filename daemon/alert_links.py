"""Acknowledgement links and short codes of alerts.

Each alert group (``domain.alerts``) has a random reference. Its link carries that
reference signed with a key derived from the node key (itsdangerous, timed: a link
older than ``link_valid_h`` is refused); its short code is a keyed hash of it, eight
base32 characters (A-Z, 2-7) for a phone or a pager reply; ``normal_code`` reads one
typed with 0 for O, 1 for I, in lower case or without its dash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

from daemon.config import Settings
from daemon.node_key import derived_key, node_key
from domain.alerts import AlertAcknowledgement

ACK_PATH = "/alerts/ack/"
_TYPED = str.maketrans("01", "OI")  # base32 has no 0 or 1: they were meant as O and I


class AlertLinks:
    """Signs and checks acknowledgement tokens; makes links and short codes."""

    def __init__(self, key: bytes, public_url: str = "", valid_s: float = 7 * 86400.0) -> None:
        self._serializer = URLSafeTimedSerializer(derived_key(key, "alert-ack"), salt="hemex-alert-ack")
        self._code_key = derived_key(key, "alert-code")
        self._public_url = public_url.rstrip("/")
        self._valid_s = valid_s

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertLinks:
        ack = settings.alerts.acknowledgement
        return cls(node_key(settings), ack.public_url, ack.link_valid_h * 3600.0)

    def new_group(self) -> AlertAcknowledgement:
        """A new group: a random reference, its code and link."""
        return self.for_group(secrets.token_urlsafe(12))

    def for_group(self, ref: str) -> AlertAcknowledgement:
        """The code and (when a public URL is set) a fresh link of the group ``ref``."""
        url = f"{self._public_url}{ACK_PATH}{self.token(ref)}" if self._public_url else None
        return AlertAcknowledgement(ref, self.short_code(ref), url)

    def token(self, ref: str) -> str:
        return self._serializer.dumps(ref)

    def ref_of(self, token: str) -> str | None:
        """The group reference a token carries; None when forged, damaged or expired."""
        try:
            ref = self._serializer.loads(token, max_age=int(self._valid_s))
        except BadSignature:  # SignatureExpired is a BadSignature
            return None
        return ref if isinstance(ref, str) else None

    def short_code(self, ref: str) -> str:
        digest = hmac.new(self._code_key, ref.encode("utf-8"), hashlib.sha256).digest()
        code = base64.b32encode(digest[:5]).decode("ascii")
        return f"{code[:4]}-{code[4:8]}"


def normal_code(typed: str) -> str:
    """A short code as stored, from what someone typed ("abcd efgh", "ABCDEFGH", ...)."""
    letters = "".join(ch for ch in typed.upper().translate(_TYPED) if ch.isalnum())
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else typed.strip().upper()
