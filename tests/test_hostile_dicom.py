"""Hostile DICOM input against the real listener on loopback.

Synthetic tiny CT slices (not anatomy, tests.test_dicom_listener.tiny_ct) are damaged in
the test and sent with a pynetdicom SCU; pynetdicom sends a file given by path without
decoding it, so truncated and garbage datasets really cross the wire. Each case checks
the status, that nothing was stored, a logged reason, and that the listener still
accepts a good instance afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage

from tests.test_dicom_listener import Listener, _start, tiny_ct

UNSUPPORTED_TS = "1.2.840.10008.1.2.4.100"  # MPEG2 video: never offered by the listener


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running, server = _start(tmp_path, max_instance_bytes=64 * 1024)
    yield running
    server.shutdown()  # type: ignore[attr-defined]


def _send(port: int, dataset: Path | pydicom.Dataset, sop_class: str = CTImageStorage,
          transfer_syntax: str = ExplicitVRLittleEndian) -> int | None:
    """C-STORE one object; the status, or None when no context was accepted for it."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(sop_class, transfer_syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="HEMEX")
    assert assoc.is_established
    try:
        if not assoc.accepted_contexts:
            return None
        status = assoc.send_c_store(dataset)
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def _send_raw(port: int, dataset_bytes: bytes) -> int:
    """C-STORE bytes that no SCU would encode (pynetdicom's DIMSE layer, no checks)."""
    ae = AE(ae_title="STORESCU")
    ae.dimse_timeout = 10
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="HEMEX")
    assert assoc.is_established
    try:
        req = C_STORE()
        req.MessageID = 1
        req.AffectedSOPClassUID = CTImageStorage
        req.AffectedSOPInstanceUID = generate_uid()
        req.Priority = 2
        req.DataSet = BytesIO(dataset_bytes)
        # Pause the association's reactor the way send_c_store does, or it may take the
        # response as an unsolicited message before get_msg sees it.
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.001)
        try:
            assoc.dimse.send_msg(req, assoc.accepted_contexts[0].context_id)
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        assert rsp is not None, "no C-STORE response from the listener"
        return int(rsp.Status)
    finally:
        assoc.release()


def _dataset_bytes(path: Path) -> bytes:
    """The dataset part of a Part 10 file (after preamble and file meta)."""
    raw = path.read_bytes()
    return raw[raw.find(b"\x08\x00\x16\x00"):]  # SOPClassUID, the dataset's first element here


def _count(listener: Listener) -> int:
    return int(listener.db.query("SELECT COUNT(*) FROM instances")[0][0])


def _still_serving(listener: Listener, tmp_path: Path) -> None:
    good = tiny_ct(tmp_path / "good.dcm", generate_uid(), generate_uid(), 0)
    before = _count(listener)
    assert _send(listener.port, good) == 0x0000
    assert _count(listener) == before + 1


def _valid_file(tmp_path: Path) -> Path:
    return tiny_ct(tmp_path / "in/valid.dcm", generate_uid(), generate_uid(), 0)


def test_truncated_dataset_over_the_wire_cannot_be_understood(
    listener: Listener, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    raw = _valid_file(tmp_path).read_bytes()
    cut = tmp_path / "in/truncated.dcm"
    cut.write_bytes(raw[: len(raw) - 100])  # inside the pixel data element
    with caplog.at_level(logging.WARNING, logger="daemon.receive.storage_scp"):
        assert _send(listener.port, cut) == 0xC000
    assert _count(listener) == 0
    assert "status=0xC000" in caplog.text
    _still_serving(listener, tmp_path)


def test_dataset_cut_inside_the_header_cannot_be_understood(listener: Listener, tmp_path: Path) -> None:
    body = _dataset_bytes(_valid_file(tmp_path))
    assert _send_raw(listener.port, body[:70]) == 0xC000  # cut inside the UID elements
    assert _count(listener) == 0
    _still_serving(listener, tmp_path)


def test_garbage_bytes_in_the_dataset_cannot_be_understood(
    listener: Listener, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="daemon.receive.storage_scp"):
        assert _send_raw(listener.port, bytes(range(256)) * 4) == 0xC000
    assert _count(listener) == 0
    assert "c-store" in caplog.text
    _still_serving(listener, tmp_path)


def test_object_over_max_instance_bytes_is_refused_out_of_resources(
    listener: Listener, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    ds = pydicom.dcmread(_valid_file(tmp_path))
    ds.Rows = ds.Columns = 256  # 128 KiB of pixels, over the 64 KiB limit of the fixture
    ds.PixelData = b"\x00\x04" * (256 * 256)
    with caplog.at_level(logging.WARNING, logger="daemon.receive.storage_scp"):
        assert _send(listener.port, ds) == 0xA700
    assert "object too large" in caplog.text
    assert _count(listener) == 0
    assert not list(listener.spool.rglob("*.dcm"))
    _still_serving(listener, tmp_path)


def test_wrong_modality_is_refused(listener: Listener, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tiny_ct(tmp_path / "in/mr.dcm", generate_uid(), generate_uid(), 0, modality="MR")
    with caplog.at_level(logging.WARNING, logger="daemon.receive.storage_scp"):
        assert _send(listener.port, path) == 0xA900
    assert "not a CT image" in caplog.text
    assert _count(listener) == 0
    _still_serving(listener, tmp_path)


def test_sop_class_not_offered_is_rejected_at_presentation_context(listener: Listener, tmp_path: Path) -> None:
    ds = pydicom.dcmread(_valid_file(tmp_path))
    ds.SOPClassUID = MRImageStorage
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="HEMEX")
    assert assoc.is_established
    try:
        assert [c.abstract_syntax for c in assoc.rejected_contexts] == [MRImageStorage]
        with pytest.raises(ValueError):  # no accepted context: the SCU cannot even send it
            assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert _count(listener) == 0
    _still_serving(listener, tmp_path)


def test_unsupported_transfer_syntax_is_rejected_at_presentation_context(listener: Listener, tmp_path: Path) -> None:
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, UNSUPPORTED_TS)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="HEMEX")
    assert assoc.is_established
    try:
        assert [c.transfer_syntax for c in assoc.accepted_contexts] == [[ExplicitVRLittleEndian]]
        assert len(assoc.rejected_contexts) == 1
    finally:
        assoc.release()
    _still_serving(listener, tmp_path)


def test_absurd_geometry_is_an_unsupported_series(tmp_path: Path) -> None:
    volume = pytest.importorskip("inference.series_to_volume")
    from domain.errors import UnsupportedSeriesError

    study, series = generate_uid(), generate_uid()
    slices = [pydicom.dcmread(tiny_ct(tmp_path / f"g{i}.dcm", study, series, i)) for i in range(3)]
    for ds in slices:  # every slice at the same position: no slice spacing at all
        ds.ImagePositionPatient = [0, 0, 0]
    with pytest.raises(UnsupportedSeriesError):
        volume.volume_from_datasets(slices)
    slices[1].ImageOrientationPatient = [1e9, 0, 0, 0, 1e-9, 0]  # not unit vectors
    with pytest.raises(UnsupportedSeriesError):
        volume.volume_from_datasets(slices)
