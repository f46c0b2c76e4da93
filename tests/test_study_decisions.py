"""Every study is answered, from the right series, as a scanner really sends it.

The node runs as a process (`hemex serve`); dcmtk storescu is the scanner, sending a
whole study in one association: a scout, then thick and thin soft-tissue series and a
bone series, none with Images in Acquisition (so completion is decided from the slice
stack). Orthanc is the PACS and an HTTP server the on-call webhook. The CT series are
synthetic phantoms (tests/support/phantoms.py).
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.support.alert_peers import HttpReceiver
from tests.support.node_process import NodeConfig, NodeDatabase, NodeProcess, write_node_config
from tests.support.peers import Orthanc, wait_until
from tests.support.phantoms import make_head_ct_series
from tests.support.sr_reading import sr_texts

pytestmark = pytest.mark.integration


def _series(folder: Path, study_uid: str, number: int, description: str, *, slice_mm: float = 2.5,
            slices: int = 24, kernel: str = "H30s", localizer: bool = False) -> list[Path]:
    """One series of the study as a scanner without Images in Acquisition sends it."""
    phantom = make_head_ct_series(folder / str(number), slices=slices, rows=64, pixel_mm=230.0 / 64,
                                  slice_mm=slice_mm, study_uid=study_uid, series_description=description,
                                  kernel=kernel, series_number=number, patient_id="MIX-1",
                                  accession="ACC-MIX-1", hematoma_radii_mm=(14.0, 12.0, 12.0))
    for path in phantom.paths:
        ds = pydicom.dcmread(path)
        del ds.ImagesInAcquisition
        if localizer:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(path, enforce_file_format=True)
    return phantom.paths


def _storescu(port: int, files: list[Path]) -> None:
    result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def _srs(orthanc: Orthanc) -> list[pydicom.Dataset]:
    """The SRs in the PACS, oldest first (by Instance Number: each names its predecessor)."""
    found = []
    for orthanc_id in orthanc.instances():
        ds = pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{orthanc_id}/file")))
        if ds.Modality == "SR":
            found.append(ds)
    return sorted(found, key=lambda ds: int(ds.InstanceNumber))


def _evidence_series(sr: pydicom.Dataset, among: set[str]) -> set[str]:
    """The CT series (of ``among``) the SR names as its evidence."""
    return among & {str(series.SeriesInstanceUID) for study in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in study.ReferencedSeriesSequence}


def _predecessor(sr: pydicom.Dataset) -> str | None:
    if "PredecessorDocumentsSequence" not in sr:
        return None
    return str(sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
               .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def _alert_keys(webhook: HttpReceiver) -> list[str]:
    return [json.loads(request.body)["alert_key"] for request in webhook.requests]


def _settled(config: NodeConfig) -> bool:
    """No series open and no job pending or running: nothing more will happen by itself."""
    db = NodeDatabase(config.data_dir)
    return (db.count("SELECT COUNT(*) FROM series WHERE state = 'receiving'") == 0
            and db.count("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')") == 0
            and db.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'") == 0)


def test_a_mixed_study_is_reported_from_its_thin_series(tmp_path: Path, orthanc: Orthanc) -> None:
    study = generate_uid()
    scout = _series(tmp_path / "ct", study, 1, "SCOUT", slices=2, localizer=True)
    thick = _series(tmp_path / "ct", study, 2, "HEAD 5mm", slice_mm=5.0, slices=20)
    thin = _series(tmp_path / "ct", study, 3, "HEAD 2.5mm", slice_mm=2.5, slices=40)
    bone = _series(tmp_path / "ct", study, 4, "HEAD BONE", slice_mm=2.5, slices=40, kernel="H70h")
    config = write_node_config(tmp_path / "node", orthanc.dicom_port, orthanc.ae_title, quiet_period_s=4.0,
                               study_settle_s=2.0)
    node = NodeProcess(config, tmp_path / "node.out")
    node.start()
    try:
        _storescu(config.dicom_port, scout + thick + thin + bone)
        ct = {str(pydicom.dcmread(s[0], stop_before_pixels=True).SeriesInstanceUID): s
              for s in (scout, thick, thin, bone)}
        thin_uid = str(pydicom.dcmread(thin[0], stop_before_pixels=True).SeriesInstanceUID)
        wait_until(lambda: any(_evidence_series(sr, set(ct)) == {thin_uid} for sr in _srs(orthanc)),
                   timeout_s=120, interval_s=0.5)
        wait_until(lambda: _settled(config), timeout_s=60, interval_s=0.5)
    finally:
        assert node.stop() == 0, node.output_tail()
    srs = _srs(orthanc)
    # One report, from the thin series; or, if the thick series was analysed before the
    # thin one arrived, a first report that the thin series' report supersedes.
    assert _evidence_series(srs[-1], set(ct)) == {thin_uid}
    assert len(srs) in (1, 2)
    if len(srs) == 2:
        assert _predecessor(srs[1]) == str(srs[0].SOPInstanceUID)
    db = NodeDatabase(config.data_dir)
    assert db.rows(f"SELECT state FROM studies WHERE study_uid = '{study}'") == [("final",)]
    assert db.count("SELECT COUNT(*) FROM jobs WHERE state = 'failed'") == 0
    log = (config.data_dir / "logs" / "hemex.log").read_text(encoding="utf-8")
    assert "job failed" not in log  # the scout is not a failure


def test_a_study_without_a_usable_series_is_answered_then_analysed_when_one_comes(
        tmp_path: Path, orthanc: Orthanc, webhook: HttpReceiver) -> None:
    study = generate_uid()
    scout = _series(tmp_path / "ct", study, 1, "SCOUT", slices=2, localizer=True)
    bone = _series(tmp_path / "ct", study, 4, "HEAD BONE", slice_mm=1.0, slices=30, kernel="H70h")
    config = write_node_config(tmp_path / "node", orthanc.dicom_port, orthanc.ae_title, quiet_period_s=3.0,
                               study_settle_s=2.0, validate_reports=True, webhook_url=webhook.url)
    node = NodeProcess(config, tmp_path / "node.out")
    node.start()
    db = NodeDatabase(config.data_dir)
    try:
        _storescu(config.dicom_port, scout + bone)
        # The notice reaches the PACS and the on-call webhook: nobody waits for a result.
        wait_until(lambda: len(_srs(orthanc)) == 1 and "not-analysed" in _alert_keys(webhook), timeout_s=120,
                   interval_s=0.5)
        notice = _srs(orthanc)[0]
        texts = " ".join(sr_texts(notice))
        assert "CT not analysed" in texts and "localizer (scout) images" in texts and "HEAD BONE" in texts
        assert notice.CompletionFlag == "COMPLETE" and notice.VerificationFlag == "UNVERIFIED"
        assert db.rows(f"SELECT state FROM studies WHERE study_uid = '{study}'") == [("no_series",)]
        alert = json.loads(webhook.requests[_alert_keys(webhook).index("not-analysed")].body)
        assert alert["not_analysed"]["state"] == "no_series" and alert["study"]["accession_number"] == "ACC-MIX-1"
        # A usable series of the same study arrives later: it is analysed, its report
        # supersedes the notice, and on-call staff hear it was analysed after all.
        _storescu(config.dicom_port, _series(tmp_path / "ct", study, 3, "HEAD 2.5mm", slices=24))
        wait_until(lambda: len(_srs(orthanc)) == 2 and "analysed-after-notice" in _alert_keys(webhook),
                   timeout_s=120, interval_s=0.5)
        wait_until(lambda: _settled(config), timeout_s=60, interval_s=0.5)
    finally:
        assert node.stop() == 0, node.output_tail()
    notice, report = _srs(orthanc)
    assert _predecessor(report) == str(notice.SOPInstanceUID)
    assert "CT not analysed" not in " ".join(sr_texts(report))
    assert db.rows(f"SELECT state FROM studies WHERE study_uid = '{study}'") == [("final",)]
    assert _alert_keys(webhook).count("not-analysed") == 1
