"""Fuzz targets shared by bench/fuzz_parsers.py and tests/test_fuzz_regressions.py.

Each target takes bytes and either returns or raises one of the exception types its
boundary converts (to a DICOM status or an HL7 ACK). Anything else escaping is a bug.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from daemon.clinical.hl7_parsing import MessageRejected, check_message, extract_content
from daemon.receive.instance_store import InstanceHeader
from daemon.receive.storage_scp import _DECODE_ERRORS, _check_native_pixel_length
from domain.errors import InvalidInputError
from tests.support.hl7_peers import adt, merge, obx, oru

# What handle_store converts to 0xC000 (daemon/receive/storage_scp.py).
DICOM_EXPECTED: tuple[type[BaseException], ...] = (InvalidInputError, InvalidDicomError, *_DECODE_ERRORS)
HL7_EXPECTED: tuple[type[BaseException], ...] = (MessageRejected,)


def dicom_header_target(data: bytes) -> None:
    """What the C-STORE handler does with a received file: decode, index, pixel check."""
    ds = pydicom.dcmread(BytesIO(data), force=True)
    header = InstanceHeader.from_dataset(ds)
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        raise InvalidInputError("no transfer syntax")
    _check_native_pixel_length(ds)
    str(header)


def hl7_target(data: bytes) -> None:
    """What the MLLP store thread does with one frame's payload, plus content extraction."""
    checked = check_message(data, parse=True)
    extract_content(checked)


def dicom_seed(tmp_dir: Path) -> bytes:
    """A valid tiny CT Part 10 file (synthetic)."""
    from tests.test_dicom_listener import tiny_ct

    return tiny_ct(tmp_dir / "seed.dcm", generate_uid(), generate_uid(), 0).read_bytes()


def hl7_seeds() -> list[bytes]:
    """Valid synthetic ADT, merge and ORU messages."""
    return [m.encode() for m in (
        adt("C1"), merge("C2", "P002", "P001"),
        oru("C3", [obx(1, "8480-6", "150", "mm[Hg]", "20240101093000"), obx(2, "6301-6", "2.5", "{INR}")]),
    )]

