"""The C-STORE / C-ECHO listener against dcmtk's storescu and echoscu as the scanner.

Images are small synthetic CT slices made in the test (not anatomy); what is checked is
the protocol: statuses, durability before success, allow-list, duplicates.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.support.dicom_listener import Listener, start_receive_listener, storescu, tiny_ct


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = start_receive_listener(tmp_path)
    yield running
    running.stop()


def test_series_is_stored_durably_and_acknowledged(listener: Listener, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    files = [tiny_ct(tmp_path / f"in/{i}.dcm", study, series, i) for i in range(3)]
    result = storescu(listener.port, files)
    assert result.returncode == 0, result.stderr
    rows = listener.instances(series)
    assert len(rows) == 3
    for row in rows:  # what was acknowledged is on disk, byte-readable, same pixels
        assert pydicom.dcmread(row.path).pixel_array.max() == 1064
    with listener.db.reading() as repos:
        assert repos.images.series_instance_count(series) == 3


def test_duplicate_instance_is_stored_once_and_acknowledged(listener: Listener, tmp_path: Path) -> None:
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
    assert storescu(listener.port, [path]).returncode == 0
    assert storescu(listener.port, [path]).returncode == 0
    assert listener.count() == 1


def test_unknown_calling_ae_is_rejected_at_association(listener: Listener, tmp_path: Path) -> None:
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
    result = storescu(listener.port, [path], "INTRUDER")
    assert result.returncode != 0
    assert "Rejected" in result.stderr + result.stdout
    assert listener.count() == 0


def test_echo_succeeds_for_allowed_caller(listener: Listener) -> None:
    result = subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1", str(listener.port)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_full_disk_returns_out_of_resources(tmp_path: Path) -> None:
    running = start_receive_listener(tmp_path, min_free_disk_mb=10**9)
    try:
        path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
        status = _pynetdicom_store(running.port, pydicom.dcmread(path))
        assert status == 0xA700
        assert running.count() == 0
        assert not list(running.spool.rglob("*.dcm"))
    finally:
        running.stop()


def test_wrong_modality_in_ct_sop_class_is_refused(listener: Listener, tmp_path: Path) -> None:
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0, modality="MR")
    assert _pynetdicom_store(listener.port, pydicom.dcmread(path)) == 0xA900
    assert listener.count() == 0


def test_dataset_without_identifying_uids_cannot_be_understood(listener: Listener, tmp_path: Path) -> None:
    ds = pydicom.dcmread(tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0))
    ds.StudyInstanceUID = "not a uid"
    assert _pynetdicom_store(listener.port, ds) == 0xC000
    assert listener.count() == 0


def _pynetdicom_store(port: int, ds: Dataset) -> int:
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="HEMEX")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status)
    finally:
        assoc.release()
