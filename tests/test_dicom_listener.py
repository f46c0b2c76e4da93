"""The C-STORE / C-ECHO listener against dcmtk's storescu and echoscu as the scanner.

Images are small synthetic CT slices made in the test (not anatomy); what is checked is
the protocol: statuses, durability before success, allow-list (echo from any AE title, store only
from listed ones), duplicates.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from daemon.config import DicomListenerSettings
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


def test_unknown_calling_ae_may_not_store_and_is_told_why(listener: Listener, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """An AE title outside dicom.allowed_calling_ae_titles gets 0x0124 for each C-STORE,
    a log line that names the setting, and an audit record; nothing is stored."""
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
    with caplog.at_level(logging.INFO, logger="daemon.receive.storage_scp"):
        result = storescu(listener.port, [path], "INTRUDER", "-v")
    assert result.returncode != 0
    # dcmtk knows only the storage statuses by name and prints the general one as a number.
    assert "Store Response (Unknown Status: 0x124)" in result.stderr, result.stderr
    assert listener.count() == 0
    assert "calling_ae=INTRUDER" in caplog.text
    assert "dicom.allowed_calling_ae_titles" in caplog.text and "status=0x0124" in caplog.text
    records = [json.loads(line) for line in listener.audit.path.read_text().splitlines()]
    refused = [r for r in records if r["action"] == "dicom-store-refused"]
    assert len(refused) == 1 and refused[0]["calling_ae"] == "INTRUDER"
    assert "dicom.allowed_calling_ae_titles" in refused[0]["reason"]


def test_pynetdicom_store_from_unlisted_ae_gets_not_authorised(listener: Listener, tmp_path: Path) -> None:
    ds = pydicom.dcmread(tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0))
    assert _pynetdicom_store(listener.port, ds, calling_ae="INTRUDER") == 0x0124
    assert listener.count() == 0


def test_echo_succeeds_for_allowed_caller(listener: Listener) -> None:
    result = subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1", str(listener.port)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_echoscu_with_its_own_ae_title_succeeds_on_the_embedded_defaults(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`echoscu HOST 11112` as a PACS administrator types it (calling AE ECHOSCU) on the
    default allow-list, which does not name ECHOSCU: the echo succeeds, and the log says
    that this AE title could not store and which setting would let it."""
    defaults = DicomListenerSettings()
    assert "ECHOSCU" not in defaults.allowed_calling_ae_titles
    running = start_receive_listener(tmp_path, allowed_calling_ae_titles=defaults.allowed_calling_ae_titles)
    try:
        with caplog.at_level(logging.INFO, logger="daemon.receive.storage_scp"):
            result = subprocess.run(["echoscu", "127.0.0.1", str(running.port)],
                                    capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        accepted = [line for line in caplog.text.splitlines() if "calling_ae=ECHOSCU" in line]
        assert accepted and "C-ECHO only" in accepted[0] and "dicom.allowed_calling_ae_titles" in accepted[0]
    finally:
        running.stop()


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


def _pynetdicom_store(port: int, ds: Dataset, calling_ae: str = "STORESCU") -> int:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="HEMEX")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status)
    finally:
        assoc.release()
