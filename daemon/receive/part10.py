"""The DICOM file header (preamble + File Meta Information) of a received instance.

The spool file is this header followed by the data set exactly as it arrived. pydicom's
writer (``pynetdicom.dsutils.create_file_meta`` + ``encode_file_meta``) builds the same
eight elements for about half a millisecond per instance, a third of what dcmtk's storescp
spends on a whole 512 x 512 image, so they are encoded here directly: group 0002 is always
Explicit VR Little Endian and holds only these fixed elements.
tests/test_part10.py checks the bytes against pydicom's own encoding.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_PREAMBLE = b"\0" * 128 + b"DICM"
_VERSION = b"\x02\x00\x01\x00OB\x00\x00" + struct.pack("<I", 2) + b"\x00\x01"  # (0002,0001)


def _short(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    """One group-0002 element with a 2-byte length (UI, SH, AE), padded to even length."""
    if len(value) % 2:
        value += pad
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae_title: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information of one instance.

    The implementation class UID and version name are pynetdicom's, as its own
    ``create_file_meta`` writes them.
    """
    elements = b"".join((
        _VERSION,
        _short(0x0002, b"UI", sop_class_uid.encode("ascii"), b"\0"),
        _short(0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\0"),
        _short(0x0010, b"UI", transfer_syntax.encode("ascii"), b"\0"),
        _short(0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\0"),
        _short(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" "),
        _short(0x0016, b"AE", source_ae_title.encode("ascii", errors="replace"), b" "),
    ))
    group_length = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HI", 4, len(elements))
    return _PREAMBLE + group_length + elements
