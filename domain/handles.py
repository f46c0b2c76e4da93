"""Non-PHI handles that name a study in logs."""

from __future__ import annotations

import hashlib


def study_handle(study_uid: str) -> str:
    """A short, stable pseudonym for a Study Instance UID (logs never carry the UID or PHI)."""
    return "st-" + hashlib.sha256(study_uid.encode("ascii", "replace")).hexdigest()[:10]
