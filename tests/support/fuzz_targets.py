"""Fuzz targets shared by bench/fuzz_parsers.py and tests/test_fuzz_regressions.py.

Each target runs the node's own boundary code on bytes: ``DicomTarget`` is the C-STORE
handler's ``receive_instance`` with a real instance store, ``hl7_target`` the MLLP store
thread's check and the content extraction. The DICOM target must answer one of the
protocol statuses and never raise; the HL7 target may raise only ``MessageRejected``
(it becomes an AE/AR ACK). Anything else escaping is a bug.
"""

from __future__ import annotations

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
from daemon.receive.storage_scp import ReceivedObject, receive_instance
from daemon.state.database import Database
from tests.support.dicom_listener import tiny_ct
from tests.support.hl7_peers import adt, merge, obx, oru

# The statuses receive_instance answers (daemon/receive/storage_scp.py).
DICOM_STATUSES = frozenset({0x0000, 0xA700, 0xA900, 0xC000})
HL7_EXPECTED: tuple[type[BaseException], ...] = (MessageRejected,)


class DicomTarget:
    """``receive_instance`` on a real store in ``folder``: data set bytes in, status out.

    The bytes are written to a file behind a file meta header first, as pynetdicom writes
    a received data set (``STORE_RECV_CHUNKED_DATASET``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = Database(folder / "fuzz.sqlite3")
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
