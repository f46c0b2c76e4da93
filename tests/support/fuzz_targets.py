"""Fuzz targets shared by bench/fuzz_parsers.py and tests/test_fuzz_regressions.py.

Each target runs the node's own boundary code on bytes: ``DicomTarget`` is the C-STORE
handler's ``receive_instance`` with a real instance store, ``PduGuardTarget`` the
association layer's byte-stream guard, ``hl7_target`` the MLLP store thread's check and
the content extraction. The DICOM target must answer one of the
protocol statuses and never raise; the HL7 target may raise only ``MessageRejected``
(it becomes an AE/AR ACK). Anything else escaping is a bug.
"""

from __future__ import annotations

import socket
import ssl
import struct
from pathlib import Path

import pydicom
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta, split_dataset
from pynetdicom.sop_class import CTImageStorage

from daemon.assemble.series_tracker import SeriesTracker
from daemon.audit_log import AuditLog
from daemon.config import DicomListenerSettings, SeriesCompletionSettings
from daemon.intake.hl7_parsing import MessageRejected, check_message, extract_content
from daemon.receive.instance_store import InstanceStore
from daemon.receive.pdu_guard import GuardViolation, PduLimits, PduStreamGuard
from daemon.receive.storage_scp import ReceivedObject, receive_instance
from tests.support.databases import open_database, open_database_at
from tests.support.dicom_listener import tiny_ct
from tests.support.hl7_peers import adt, merge, obx, oru

# The statuses receive_instance answers (daemon/receive/storage_scp.py).
DICOM_STATUSES = frozenset({0x0000, 0xA700, 0xA900, 0xC000})
HL7_EXPECTED: tuple[type[BaseException], ...] = (MessageRejected,)


class DicomTarget:
    """``receive_instance`` on a real store in ``folder``: data set bytes in, status out.

    The bytes are written to a file behind a file meta header first, as pynetdicom writes
    a received data set (``STORE_RECV_CHUNKED_DATASET``)."""

    def __init__(self, folder: Path, database_url: str | None = None) -> None:
        self.folder = folder
        self.db = open_database_at(database_url) if database_url else open_database(folder / "fuzz.sqlite3")
        tracker = SeriesTracker(self.db, SeriesCompletionSettings())
        self.store = InstanceStore(self.db, folder / "spool", 0, tracker)
        self.audit = AuditLog(folder / "logs")
        self.settings = DicomListenerSettings(max_instance_bytes=1024 * 1024)

    def __call__(self, dataset_bytes: bytes) -> int:
        """The C-STORE status for ``dataset_bytes`` sent as Explicit VR Little Endian CT."""
        meta = create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=generate_uid(),
                                transfer_syntax=ExplicitVRLittleEndian)
        head = b"\0" * 128 + b"DICM" + encode_file_meta(meta)
        path = self.folder / "received.dcm"
        path.write_bytes(head + dataset_bytes)
        received = ReceivedObject(path, len(head), ExplicitVRLittleEndian, CTImageStorage, "FUZZER", "127.0.0.1:0")
        return receive_instance(received, self.store, self.settings, self.audit)

    def close(self) -> None:
        self.audit.close()
        self.db.close()


def dataset_bytes_of(case: Path) -> bytes:
    """The data set of a (damaged) DICOM file as a scanner sends it over the network: the
    bytes after its file meta."""
    _, offset = split_dataset(case)
    return case.read_bytes()[offset:]


def hl7_target(data: bytes) -> None:
    """What the MLLP store thread does with one frame's payload, plus content extraction."""
    checked = check_message(data, parse=True)
    extract_content(checked)


def dicom_seed(tmp_dir: Path) -> bytes:
    """The data set of a valid tiny CT slice (synthetic), as sent over the network."""
    ds = pydicom.dcmread(tiny_ct(tmp_dir / "seed.dcm", generate_uid(), generate_uid(), 0))
    return bytes(encode(ds, False, True))


def hl7_seeds() -> list[bytes]:
    """Valid synthetic ADT, merge and ORU messages."""
    return [m.encode() for m in (
        adt("C1"), merge("C2", "P002", "P001"),
        oru("C3", [obx(1, "8480-6", "150", "mm[Hg]", "20240101093000"), obx(2, "6301-6", "2.5", "{INR}")]),
    )]


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Seeds with a few byte flips, an insertion and an optional truncation; or random bytes."""

    @st.composite
    def _mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            pos = draw(st.integers(0, len(data)))
            data[pos:pos] = draw(st.binary(max_size=64))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        return bytes(data)

    return st.one_of(_mutate(), st.binary(max_size=512))


# --- association layer ----------------------------------------------------------------

def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def association_request(calling: str = "STORESCU", called: str = "HEMEX",
                        abstract_syntax: str = "1.2.840.10008.1.1") -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing one presentation context."""
    context = (b"\x01\x00\x00\x00" + _item(0x30, abstract_syntax.encode())
               + _item(0x40, b"1.2.840.10008.1.2"))
    user_info = _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9.3811")
    body = (b"\x00\x01\x00\x00" + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context) + _item(0x50, user_info))
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def p_data(fragments: list[tuple[int, bytes]], context_id: int = 1) -> bytes:
    """A P-DATA-TF PDU of presentation data values (message control header, data)."""
    body = b"".join(struct.pack(">LBB", len(data) + 2, context_id, control) + data for control, data in fragments)
    return struct.pack(">BBL", 0x04, 0, len(body)) + body


def association_seeds() -> list[bytes]:
    """Byte streams a peer sends: a request, then command and data set fragments, a release."""
    request = association_request()
    echo_command = b"\x00\x00\x00\x00UL\x04\x00\x38\x00\x00\x00"  # part of a command set, as bytes
    release = struct.pack(">BBL", 0x05, 0, 4) + bytes(4)
    return [
        request,
        request + p_data([(0x03, echo_command)]) + release,
        request + p_data([(0x01, echo_command), (0x03, echo_command)]) + p_data([(0x00, bytes(300)), (0x02, bytes(10))]),
    ]


class PduGuardTarget:
    """``PduStreamGuard.feed`` on a stream cut at random points: a verdict or None, never an exception."""

    def __init__(self) -> None:
        self.limits = PduLimits(max_pdu_bytes=4096, max_instance_bytes=2048, acse_timeout_s=10.0,
                                dimse_timeout_s=10.0, network_timeout_s=10.0)

    def __call__(self, stream: bytes) -> GuardViolation | None:
        guard = PduStreamGuard(self.limits, connected_at=0.0)
        position, step = 0, 1
        while position < len(stream):
            verdict = guard.feed(stream[position:position + step], now=1.0)
            if verdict is not None:
                return verdict
            position, step = position + step, step * 3 % 97 + 1
        return None


def client_hello() -> bytes:
    """The first flight of a TLS 1.2+ client (a ClientHello record), made in memory."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def send_hostile_stream(port: int, stream: bytes, tls: ssl.SSLContext | None = None, wait_s: float = 5.0) -> None:
    """Send ``stream`` to the listener (inside a TLS session when ``tls`` is given; a
    ClientHello fuzz case is sent as raw bytes instead), then read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as raw:
        sock: socket.socket = raw
        try:
            if tls is not None:
                sock = tls.wrap_socket(raw, server_hostname="localhost")
            sock.sendall(stream)
            sock.settimeout(wait_s)
            while sock.recv(65536):
                pass
        except (OSError, ssl.SSLError):
            pass  # refused, reset or timed out: what a hostile stream should get


def echo_succeeds(port: int, tls: ssl.SSLContext | None = None) -> bool:
    """A good C-ECHO (pynetdicom, calling AE STORESCU) gets Success."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="HEMEX", tls_args=(tls, "localhost") if tls else None)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return "Status" in status and int(status.Status) == 0
    finally:
        assoc.release()
