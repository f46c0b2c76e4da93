"""HL7 acknowledgements (ACK) with MSA and, for errors, ERR."""

from __future__ import annotations

import uuid
from datetime import datetime

from daemon.hl7_escape import DEFAULT_ENCODING, escape
from daemon.intake.hl7_parsing import CHARSETS, MessageHeader


def build_ack(header: MessageHeader | None, ack_code: str, text: str = "", error_code: str = "",
              application: str = "HEMEX", facility: str = "") -> bytes:
    """An ACK for ``header`` (None when the message had no readable MSH).

    AE/AR ACKs carry the reason in MSA-3 and an ERR segment (HL7 table 0357 code,
    severity E); versions before 2.5 get it in ERR-1 instead of ERR-3/ERR-4.
    """
    sep = header.field_separator if header else "|"
    enc = header.encoding_chars if header and len(header.encoding_chars) >= 4 else DEFAULT_ENCODING
    version = header.version if header and header.version else "2.5.1"
    trigger = header.trigger if header else ""
    control_id = header.control_id if header else ""

    def e(value: str) -> str:
        return escape(value, enc, sep)

    msh = sep.join([
        "MSH", enc, e(application), e(facility),
        e(header.sending_application if header else ""), e(header.sending_facility if header else ""),
        datetime.now().strftime("%Y%m%d%H%M%S"), "",
        f"ACK{enc[0]}{e(trigger)}{enc[0]}ACK" if trigger else "ACK",
        uuid.uuid4().hex[:20], (header.processing_id if header and header.processing_id else "P"), version,
    ] + ([""] * 5 + [header.charset] if header and header.charset else []))
    segments = [msh, sep.join(["MSA", ack_code, e(control_id)] + ([e(text)] if text else []))]
    if ack_code != "AA":
        code = f"{error_code or '207'}{enc[0]}{e(text)}{enc[0]}HL70357"
        if version in ("2.1", "2.2", "2.3", "2.3.1", "2.4"):
            segments.append(sep.join(["ERR", f"{enc[0] * 3}{code.replace(enc[0], enc[3])}"]))
        else:
            segments.append(sep.join(["ERR", "", "", code, "E"]))
    codec = CHARSETS.get(header.charset, "utf-8") if header else "utf-8"
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")
