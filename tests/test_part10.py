"""The spool file's header, encoded directly, is byte for byte what pydicom writes."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.sop_class import CTImageStorage, EnhancedCTImageStorage

from daemon.receive.part10 import part10_header

pytestmark = pytest.mark.no_database


def _pydicom_header(sop_class: str, sop_instance: str, syntax: str, ae_title: str) -> bytes:
    meta = create_file_meta(sop_class_uid=UID(sop_class), sop_instance_uid=UID(sop_instance),
                            transfer_syntax=UID(syntax))
    meta.SourceApplicationEntityTitle = ae_title
    return b"\0" * 128 + b"DICM" + encode_file_meta(meta)


@pytest.mark.parametrize(("sop_class", "syntax", "ae_title"), [
    (CTImageStorage, ExplicitVRLittleEndian, "STORESCU"),  # even lengths
    (CTImageStorage, ImplicitVRLittleEndian, "CT_SCANNER1"),  # odd AE title and syntax UID
    (EnhancedCTImageStorage, JPEG2000Lossless, "A"),
    (CTImageStorage, ExplicitVRLittleEndian, "SIXTEEN_CHARS_AE"),
])
def test_header_matches_pydicom(sop_class: str, syntax: str, ae_title: str) -> None:
    for sop_instance in (generate_uid(), "1.2.3", "1.2.34"):  # odd and even UID lengths
        ours = part10_header(sop_class, sop_instance, syntax, ae_title)
        assert ours == _pydicom_header(sop_class, sop_instance, syntax, ae_title)
        read = pydicom.dcmread(BytesIO(ours))
        assert read.file_meta.MediaStorageSOPInstanceUID == sop_instance
        assert read.file_meta.SourceApplicationEntityTitle == ae_title
