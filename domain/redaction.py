"""Values taken out of text that may reach a log, an error column or a terminal.

Third-party libraries quote the offending value in their messages (pydicom: "Invalid
value for VR DA: '00000000'"; highdicom: "Unable to convert '1950-06-15' to 'DA'
object"), and that value may be a patient's birth date or name. The node masks every
quoted span of such text; the words around it still say what went wrong.
"""

from __future__ import annotations

import re

_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
MASK = "***"


def mask_quoted(text: str) -> str:
    """``text`` with the content of every '...' and "..." span replaced by ``***``."""
    return _QUOTED.sub(lambda match: f"{match.group(0)[0]}{MASK}{match.group(0)[0]}", text)
