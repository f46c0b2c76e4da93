"""The C-STORE / C-ECHO listener against dcmtk's storescu and echoscu as the scanner.

Images are small synthetic CT slices made in the test (not anatomy); what is checked is
the protocol: statuses, durability before success, allow-list, duplicates.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from daemon.config import DicomListenerSettings
from daemon.receive.instance_store import InstanceHeader, InstanceStore
from daemon.receive.storage_scp import start_listener
from daemon.state.database import Database
from tests.support.peers import free_port


def tiny_ct(path: Path, study_uid: str, series_uid: str, index: int, modality: str = "CT") -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientID = "LISTENER-TEST"
    ds.InstanceNumber = index + 1
    ds.ImagesInAcquisition = 3
    ds.ImagePositionPatient = [0, 0, float(index)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = np.full((8, 8), 1064, dtype=np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Listener:
    port: int
    db: Database
    spool: Path
    stored: list[InstanceHeader]


def _start(tmp_path: Path, **overrides: object) -> tuple[Listener, object]:
    settings = DicomListenerSettings(host="127.0.0.1", port=free_port(),
                                     allowed_calling_ae_titles=["STORESCU"], **overrides)
    db = Database(tmp_path / "db.sqlite3")
    stored: list[InstanceHeader] = []
    store = InstanceStore(db, tmp_path / "spool", settings.min_free_disk_mb * 1024 * 1024,
                          on_stored=stored.append)
    server = start_listener(settings, store)
    return Listener(settings.port, db, tmp_path / "spool", stored), server


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running, server = _start(tmp_path)
    yield running
    server.shutdown()  # type: ignore[attr-defined]


def storescu(port: int, files: list[Path], aet: str = "STORESCU", *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["storescu", "-aet", aet, "-aec", "HEMEX", *extra, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_series_is_stored_durably_and_acknowledged(listener: Listener, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    files = [tiny_ct(tmp_path / f"in/{i}.dcm", study, series, i) for i in range(3)]
    result = storescu(listener.port, files)
    assert result.returncode == 0, result.stderr
    rows = listener.db.query("SELECT path FROM instances WHERE series_uid = ?", (series,))
    assert len(rows) == 3
    for row in rows:  # what was acknowledged is on disk, byte-readable, same pixels
        assert pydicom.dcmread(row["path"]).pixel_array.max() == 1064
    assert listener.db.query("SELECT instance_count FROM series")[0][0] == 3
    assert len(listener.stored) == 3


def test_duplicate_instance_is_stored_once_and_acknowledged(listener: Listener, tmp_path: Path) -> None:
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
    assert storescu(listener.port, [path]).returncode == 0
    assert storescu(listener.port, [path]).returncode == 0
    assert listener.db.query("SELECT COUNT(*) FROM instances")[0][0] == 1
    assert len(listener.stored) == 1


def test_unknown_calling_ae_is_rejected_at_association(listener: Listener, tmp_path: Path) -> None:
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
    result = storescu(listener.port, [path], "INTRUDER")
    assert result.returncode != 0
    assert "Rejected" in result.stderr + result.stdout
    assert listener.db.query("SELECT COUNT(*) FROM instances")[0][0] == 0


def test_echo_succeeds_for_allowed_caller(listener: Listener) -> None:
    result = subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1", str(listener.port)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_full_disk_returns_out_of_resources(tmp_path: Path) -> None:
    running, server = _start(tmp_path, min_free_disk_mb=10**9)
    try:
        path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
        status = _pynetdicom_store(running.port, pydicom.dcmread(path))
        assert status == 0xA700
        assert running.db.query("SELECT COUNT(*) FROM instances")[0][0] == 0
        assert not list(running.spool.rglob("*.dcm"))
    finally:
        server.shutdown()  # type: ignore[attr-defined]


def test_wrong_modality_in_ct_sop_class_is_refused(listener: Listener, tmp_path: Path) -> None:
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0, modality="MR")
    assert _pynetdicom_store(listener.port, pydicom.dcmread(path)) == 0xA900
    assert listener.db.query("SELECT COUNT(*) FROM instances")[0][0] == 0


def test_dataset_without_identifying_uids_cannot_be_understood(listener: Listener, tmp_path: Path) -> None:
    ds = pydicom.dcmread(tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0))
    ds.StudyInstanceUID = "not a uid"
    assert _pynetdicom_store(listener.port, ds) == 0xC000
    assert listener.db.query("SELECT COUNT(*) FROM instances")[0][0] == 0


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
