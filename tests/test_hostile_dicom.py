"""Hostile DICOM input against the real listener on loopback.

Synthetic tiny CT slices (not anatomy, tests.test_dicom_listener.tiny_ct) are damaged in
the test and sent with a pynetdicom SCU; pynetdicom sends a file given by path without
decoding it, so truncated and garbage datasets really cross the wire. Each case checks
the status, that nothing was stored, a logged reason, and that the listener still
accepts a good instance afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage

from domain.errors import UnsupportedSeriesError
from inference.series_to_volume import volume_from_datasets
from tests.support.dicom_listener import (
    Listener,
    dataset_bytes,
    send,
    send_raw,
    start_receive_listener,
    still_serving,
    tiny_ct,
)

UNSUPPORTED_TS = "1.2.840.10008.1.2.4.100"  # MPEG2 video: never offered by the listener


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = start_receive_listener(tmp_path, max_instance_bytes=64 * 1024)
    yield running
    running.stop()


def _rejections(caplog: pytest.LogCaptureFixture, status: str) -> list[str]:
    """The listener's log lines that refused an object with ``status`` (e.g. "0xC000")."""
    return [r.getMessage() for r in caplog.records
            if r.name == "daemon.receive.storage_scp" and r.getMessage().endswith(f"status={status}")]


def _valid_file(tmp_path: Path) -> Path:
    return tiny_ct(tmp_path / "in/valid.dcm", generate_uid(), generate_uid(), 0)


def test_truncated_dataset_over_the_wire_cannot_be_understood(
    listener: Listener, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    raw = _valid_file(tmp_path).read_bytes()
    cut = tmp_path / "in/truncated.dcm"
    cut.write_bytes(raw[: len(raw) - 100])  # inside the pixel data element
    with caplog.at_level(logging.WARNING, logger="daemon.receive.storage_scp"):
        assert send(listener.port, cut) == 0xC000
    assert listener.count() == 0
    (line,) = _rejections(caplog, "0xC000")
    assert "pixel data truncated" in line
    still_serving(listener, tmp_path)


def test_dataset_cut_inside_the_header_cannot_be_understood(listener: Listener, tmp_path: Path) -> None:
    body = dataset_bytes(_valid_file(tmp_path))
    assert send_raw(listener.port, body[:70], tmp_path) == 0xC000  # cut inside the UID elements
    assert listener.count() == 0
    still_serving(listener, tmp_path)


def test_garbage_bytes_in_the_dataset_cannot_be_understood(
    listener: Listener, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="daemon.receive.storage_scp"):
        assert send_raw(listener.port, bytes(range(256)) * 4, tmp_path) == 0xC000
    assert listener.count() == 0
    (line,) = _rejections(caplog, "0xC000")
    assert "undecodable dataset" in line or "missing or invalid" in line or "truncated" in line
    still_serving(listener, tmp_path)


def test_wrong_modality_is_refused(listener: Listener, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tiny_ct(tmp_path / "in/mr.dcm", generate_uid(), generate_uid(), 0, modality="MR")
    with caplog.at_level(logging.WARNING, logger="daemon.receive.storage_scp"):
        assert send(listener.port, path) == 0xA900
    (line,) = _rejections(caplog, "0xA900")
    assert "not a CT image (modality=MR)" in line
    assert listener.count() == 0
    still_serving(listener, tmp_path)


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
    assert listener.count() == 0
    still_serving(listener, tmp_path)


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
    still_serving(listener, tmp_path)


def test_absurd_geometry_is_an_unsupported_series(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    slices = [pydicom.dcmread(tiny_ct(tmp_path / f"g{i}.dcm", study, series, i)) for i in range(3)]
    for ds in slices:  # every slice at the same position: no slice spacing at all
        ds.ImagePositionPatient = [0, 0, 0]
    with pytest.raises(UnsupportedSeriesError):
        volume_from_datasets(slices)
    slices[1].ImageOrientationPatient = [1e9, 0, 0, 0, 1e-9, 0]  # not unit vectors
    with pytest.raises(UnsupportedSeriesError):
        volume_from_datasets(slices)
