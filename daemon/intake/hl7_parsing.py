"""HL7 v2 messages as the node reads them: decode, check, validate, extract content.

``check_message`` decides the ACK code (AA / AE / AR) of raw bytes: the header and
encoding are checked, and hl7apy validates the message's structure, so a message it
cannot parse is never accepted. ``extract_content`` then reads the fields with
python-hl7 (see ``_Segment``) and turns them into typed, version-independent facts
(identifiers, demographics, merges, observations, medications).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import hl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from domain.clinical import PatientIdentifier
from domain.errors import InvalidInputError

# (message type, trigger) -> what the message is used for.
SUPPORTED_MESSAGES: dict[tuple[str, str], str] = {
    ("ADT", "A01"): "demographics",
    ("ADT", "A04"): "demographics",
    ("ADT", "A08"): "demographics",
    ("ADT", "A40"): "merge",
    ("ORU", "R01"): "observations",
    ("RDE", "O11"): "medication",
    ("RAS", "O17"): "medication",
    ("OMP", "O09"): "medication",
    ("ORM", "O01"): "procedure",
}
# ORC-5 order statuses of a procedure that took place (or is taking place): completed,
# in process. A new or scheduled order is not yet an operation.
PERFORMED_ORDER_STATUSES = frozenset({"CM", "IP"})
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")
# hl7apy has no 2.7.1 library; its 2.7 definitions are a superset for what is read here.
_HL7APY_VERSION = {"2.7.1": "2.7"}

# MSH-18 character set names (HL7 table 0211) -> Python codecs. Empty MSH-18 is read as
# UTF-8, a superset of the ASCII the standard defaults to.
CHARSETS: dict[str, str] = {
    "": "utf-8",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
}


class MessageRejected(InvalidInputError):
    """Raw bytes that get an AE or AR ACK; ``reason`` goes into MSA-3 and ERR."""

    def __init__(self, ack_code: str, error_code: str, reason: str, log_reason: str | None = None) -> None:
        super().__init__(reason)
        self.ack_code = ack_code  # "AE" | "AR"
        self.error_code = error_code  # HL7 table 0357
        self.reason = reason
        # What the node's own log may say: parser messages can quote message content.
        self.log_reason = log_reason or reason


@dataclass(frozen=True)
class MessageHeader:
    """MSH fields needed to store and acknowledge a message (read before decoding)."""

    field_separator: str
    encoding_chars: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_time: str
    message_type: str
    trigger: str
    control_id: str
    processing_id: str
    version: str
    charset: str

    @property
    def sender(self) -> str:
        return f"{self.sending_application}^{self.sending_facility}"

    @property
    def type_name(self) -> str:
        return f"{self.message_type}^{self.trigger}"


@dataclass(frozen=True)
class CheckedMessage:
    """A message that will be acknowledged AA: header plus its decoded, normalised text."""

    header: MessageHeader
    text: str
    purpose: str


@dataclass(frozen=True)
class RawObservation:
    """One OBX (or medication code) before mapping: codes, value, unit and times as sent."""

    codes: tuple[tuple[str, str], ...]  # (coding system, code), primary first
    value_type: str
    value: str
    unit: str
    observed_at: datetime | None
    status: str  # OBX-11 (F, C, P, ...); "F" for medication codes
    accession: str | None
    kind: str = "observation"  # observation | medication


@dataclass(frozen=True)
class RawProcedure:
    """A procedure the message says was performed (ADT PR1, or a completed ORM^O01 order)."""

    codes: tuple[tuple[str, str], ...]  # (coding system, code), primary first
    performed_at: datetime | None
    segment: str  # PR1 | OBR


@dataclass(frozen=True)
class MessageContent:
    """What one accepted message says, without HL7 syntax."""

    identifiers: tuple[PatientIdentifier, ...]
    birth_date: date | None
    sex: str | None
    merged_identifiers: tuple[PatientIdentifier, ...]
    observations: tuple[RawObservation, ...] = field(default_factory=tuple)
    procedures: tuple[RawProcedure, ...] = field(default_factory=tuple)


def split_frame_text(raw: bytes) -> bytes:
    """Normalise segment terminators to CR (senders often use LF or CRLF) and trim."""
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r \t\x00")


def read_header(raw: bytes) -> MessageHeader:
    """Read MSH from raw bytes (latin-1, so every byte decodes) without parsing the rest.

    Raises
    ------
    MessageRejected
        AE when there is no usable MSH segment.
    """
    if not raw.startswith(b"MSH") or len(raw) < 8:
        raise MessageRejected("AE", "100", "message does not begin with an MSH segment")
    text = raw.split(b"\r", 1)[0].decode("latin-1")
    if len(text) < 4:  # "MSH" then a segment break (found by bench/fuzz_parsers.py)
        raise MessageRejected("AE", "100", "MSH segment without field separator")
    sep = text[3]
    fields = text.split(sep)
    # MSH-1 is the separator itself, so MSH-n is fields[n - 1].
    msh = ["", sep] + fields[1:]

    def get(n: int) -> str:
        return msh[n].strip() if n < len(msh) else ""

    encoding = get(2)
    component = encoding[:1] or "^"
    msg_type = get(9).split(component)
    return MessageHeader(
        field_separator=sep,
        encoding_chars=encoding,
        sending_application=get(3).split(component)[0],
        sending_facility=get(4).split(component)[0],
        receiving_application=get(5).split(component)[0],
        receiving_facility=get(6).split(component)[0],
        message_time=get(7).split(component)[0],
        message_type=msg_type[0].upper(),
        trigger=(msg_type[1] if len(msg_type) > 1 else "").upper(),
        control_id=get(10),
        processing_id=get(11).split(component)[0],
        version=get(12).split(component)[0],
        charset=get(18).split(component)[0].upper(),
    )


def check_message(raw: bytes, parse: bool = True) -> CheckedMessage:
    """Decide whether ``raw`` (one MLLP payload) is accepted.

    ``parse=False`` skips the hl7apy parse (about 20 ms a message), for messages that
    passed it when they were received.

    Raises
    ------
    MessageRejected
        AR for unsupported message types, versions or character sets; AE for bytes
        that are not a well-formed HL7 message.
    """
    raw = split_frame_text(raw)
    header = read_header(raw)
    if len(header.encoding_chars) < 4 or header.field_separator.isalnum():
        raise MessageRejected("AE", "102", "MSH-1/MSH-2 encoding characters are invalid")
    if not header.control_id:
        raise MessageRejected("AE", "101", "required field MSH-10 (message control id) is empty")
    if not header.message_type:
        raise MessageRejected("AE", "101", "required field MSH-9 (message type) is empty")
    if header.version not in SUPPORTED_VERSIONS:
        raise MessageRejected("AR", "203", f"unsupported HL7 version {header.version or '(empty)'}")
    purpose = SUPPORTED_MESSAGES.get((header.message_type, header.trigger))
    if purpose is None:
        code = "201" if header.message_type in {t for t, _ in SUPPORTED_MESSAGES} else "200"
        raise MessageRejected("AR", code, f"unsupported message type {header.type_name}")
    codec = CHARSETS.get(header.charset)
    if codec is None:
        raise MessageRejected("AR", "203", f"unsupported character set {header.charset}")
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise MessageRejected(
            "AE", "102", f"bytes are not valid {header.charset or 'UTF-8'} at offset {exc.start}"
        ) from exc
    if not parse:
        return CheckedMessage(header, text, purpose)
    try:
        parsed = parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT,
                               force_validation=False)
    except (HL7apyException, ValueError, IndexError, KeyError, AttributeError) as exc:
        # hl7apy raises several types for syntax errors; none of them is recoverable here.
        raise MessageRejected("AE", "102", f"unparseable message: {type(exc).__name__}: {exc}"[:200],
                              f"unparseable message: {type(exc).__name__}") from exc
    names = [segment.name for segment in parsed.children]
    needed = "MRG" if purpose == "merge" else None
    if "PID" not in names:
        raise MessageRejected("AE", "100", "required segment PID is missing")
    if needed and needed not in names:
        raise MessageRejected("AE", "100", f"required segment {needed} is missing")
    return CheckedMessage(header, text, purpose)


# --- content --------------------------------------------------------------------------

class _Segment:
    """One segment as python-hl7 parsed it: each field as repetitions of unescaped components.

    python-hl7 is the one parser the node reads fields with (hl7apy validates a message's
    structure when it arrives and builds the outbound ORU, but its element tree is
    version-specific and about 20 ms a message; python-hl7 reads any version's fields by
    position, with the message's own separators and escape sequences, in microseconds).
    """

    def __init__(self, message: hl7.Message, segment: hl7.Segment, subcomponent: str) -> None:
        self._message = message
        self._segment = segment
        self.name = str(segment[0])
        self.subcomponent = subcomponent

    def repetitions(self, n: int) -> list[list[str]]:
        """Field ``n`` as a list of repetitions, each a list of components (subcomponents kept)."""
        try:
            field = self._segment(n)
        except IndexError:
            return []
        if not str(field):
            return []
        items = list(field)
        if not all(isinstance(item, hl7.Repetition) for item in items):
            return [[self._message.unescape(str(field))]]
        return [[self._message.unescape(component if isinstance(component, str) else str(component))
                 for component in repetition] for repetition in items]

    def component_of(self, n: int, component: int = 1) -> str:
        reps = self.repetitions(n)
        if not reps or len(reps[0]) < component:
            return ""
        return reps[0][component - 1].strip()


def parse_hl7_datetime(text: str) -> datetime | None:
    """HL7 DTM/TS (YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]) as naive local time.

    Times with an offset are converted to the node's local time zone, the zone DICOM
    acquisition times are read in; times without one are taken as local already.
    """
    text = text.strip().split("^")[0]
    match = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?", text)
    if not match:
        return None
    year, month, day, hour, minute, second, frac, offset = match.groups()
    try:
        value = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                         int(second or 0), int((frac or "0").ljust(6, "0")[:6]))
    except ValueError:
        return None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        value = value.replace(tzinfo=tz).astimezone().replace(tzinfo=None)
    return value


def _identifier(components: list[str], subcomponent: str) -> PatientIdentifier | None:
    if not components or not components[0].strip():
        return None
    authority = components[3].split(subcomponent) if len(components) > 3 else [""]
    return PatientIdentifier(
        patient_id=components[0].strip(),
        issuer=authority[0].strip(),
        issuer_universal=authority[1].strip() if len(authority) > 1 else "",
    )


def _coded(components: list[str]) -> tuple[tuple[str, str], ...]:
    """(system, code) pairs of a CE/CWE: identifier^text^system^alt id^alt text^alt system."""
    pairs = []
    for code_at, system_at in ((0, 2), (3, 5)):
        code = components[code_at].strip() if len(components) > code_at else ""
        system = components[system_at].strip().upper() if len(components) > system_at else ""
        if code:
            pairs.append((system, code))
    return tuple(pairs)


def extract_content(checked: CheckedMessage) -> MessageContent:
    """The identifiers, demographics, merges and observations of an accepted message."""
    header = checked.header
    subcomponent = header.encoding_chars[3] if len(header.encoding_chars) > 3 else "&"
    message = hl7.parse(checked.text)
    message_time = parse_hl7_datetime(header.message_time)
    identifiers: list[PatientIdentifier] = []
    merged: list[PatientIdentifier] = []
    birth_date: date | None = None
    sex: str | None = None
    observations: list[RawObservation] = []
    obr_time: datetime | None = None
    accession: str | None = None
    order_time: datetime | None = None
    order_cancelled = False
    order_performed = False
    procedures: list[RawProcedure] = []
    for segment in message:
        seg = _Segment(message, segment, subcomponent)
        name = seg.name
        if name == "PID" and not identifiers:
            for rep in seg.repetitions(3):
                ident = _identifier(rep, seg.subcomponent)
                if ident is not None:
                    identifiers.append(ident)
            dob = parse_hl7_datetime(seg.component_of(7))
            birth_date = dob.date() if dob else None
            sex = {"M": "M", "F": "F", "O": "O"}.get(seg.component_of(8).upper())
        elif name == "MRG":
            for rep in seg.repetitions(1):
                ident = _identifier(rep, seg.subcomponent)
                if ident is not None:
                    merged.append(ident)
        elif name == "ORC":
            # ORC-1 CA/DC/OC: the order was cancelled or discontinued; its codes state no use.
            order_cancelled = seg.component_of(1).upper() in {"CA", "DC", "OC", "CR"}
            order_performed = seg.component_of(5).upper() in PERFORMED_ORDER_STATUSES
            order_time = parse_hl7_datetime(seg.component_of(9))
        elif name == "OBR":
            obr_time = parse_hl7_datetime(seg.component_of(7))
            # IHE Radiology carries the accession number in OBR-18 (Placer Field 1).
            accession = seg.component_of(18) or None
            if header.message_type == "ORM" and order_performed and not order_cancelled:
                reps = seg.repetitions(4)
                procedures.append(RawProcedure(_coded(reps[0]) if reps else (),
                                               obr_time or order_time or message_time, "OBR"))
        elif name == "PR1":
            reps = seg.repetitions(3)
            procedures.append(RawProcedure(_coded(reps[0]) if reps else (),
                                           parse_hl7_datetime(seg.component_of(5)), "PR1"))
        elif name == "OBX":
            reps = seg.repetitions(3)
            value_reps = seg.repetitions(5)
            unit_reps = seg.repetitions(6)
            observations.append(RawObservation(
                codes=_coded(reps[0]) if reps else (),
                value_type=seg.component_of(2).upper(),
                value="^".join(value_reps[0]) if value_reps else "",
                unit=(unit_reps[0][0].strip() if unit_reps and unit_reps[0] else ""),
                observed_at=parse_hl7_datetime(seg.component_of(14)) or obr_time or message_time,
                status=seg.component_of(11).upper() or "F",
                accession=accession,
            ))
        elif name in {"RXE", "RXA", "RXO", "RXD"} and not order_cancelled:
            code_field = {"RXE": 2, "RXA": 5, "RXO": 1, "RXD": 2}[name]
            if name == "RXA" and seg.component_of(20).upper() in {"NA", "RE"}:
                continue  # RXA-20: not administered / refused
            # RXA-3 start of administration; RXE-1.4 start of the quantity/timing.
            start = parse_hl7_datetime(seg.component_of(3) if name == "RXA"
                                       else seg.component_of(1, 4) if name == "RXE" else "")
            for rep in seg.repetitions(code_field):
                observations.append(RawObservation(
                    codes=_coded(rep), value_type="CWE", value="Y", unit="",
                    observed_at=start or order_time or message_time, status="F",
                    accession=None, kind="medication",
                ))
    return MessageContent(tuple(identifiers), birth_date, sex, tuple(merged), tuple(observations),
                          tuple(procedures))
