"""HL7 v2 escape sequences for free text the node writes (ACKs, the outbound ORU)."""

from __future__ import annotations

DEFAULT_ENCODING = "^~\\&"


def escape(text: str, encoding: str = DEFAULT_ENCODING, field_separator: str = "|") -> str:
    """Escape separators in free text (HL7 escape sequences \\F\\ \\S\\ \\R\\ \\E\\ \\T\\)."""
    comp, rep, esc = encoding[0], encoding[1], encoding[2]
    sub = encoding[3] if len(encoding) > 3 else "&"
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((field_separator, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")
