"""The warm DicomSRValidator validates the node's newest stored SR once at start-up, so
the first report after a restart does not meet a JVM whose JIT has not run the XSLT yet
(the figures: bench/bench_validator_warm_up.py). Real JVM, real pixelmed; the SR is a
"not analysed" notice built by the node's own builder on a synthetic CT header."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from daemon.app import Node
from daemon.config import ReportSettings
from daemon.report.notice_builder import build_not_analysed_sr
from daemon.report.validation import write_dataset
from daemon.report.warm_validator import WarmSrValidator
from domain.notice import NotAnalysedNotice
from domain.report import ReportBundle, ReportObject
from domain.study import StudyIdentity, StudyState
from tests.support.dicom_listener import tiny_ct
from tests.support.node_settings import loopback_node_settings
from tests.support.peers import wait_until


def _notice_sr(folder: Path, report_settings: ReportSettings) -> tuple[str, Path]:
    study_uid = generate_uid()
    header = pydicom.dcmread(tiny_ct(folder / "ct.dcm", study_uid, generate_uid(), 0))
    header.update({"PatientName": "Warm^Up", "PatientID": "WARM-1", "PatientBirthDate": "19600101",
                   "PatientSex": "O", "StudyDate": "20261130", "StudyTime": "120000", "StudyID": "1",
                   "AccessionNumber": "ACC-WARM-1", "ReferringPhysicianName": ""})
    identity = StudyIdentity(study_uid, "st-warm", "WARM-1", None, "ACC-WARM-1", "Warm^Up", None)
    notice = NotAnalysedNotice(identity, StudyState.NO_SERIES, "no axial series", (), "0.1.0")
    path = folder / "sr.dcm"
    write_dataset(build_not_analysed_sr(notice, [header], report_settings), path)
    return study_uid, path


def test_a_node_with_stored_reports_warms_its_validator_with_the_newest(tmp_path: Path) -> None:
    settings = loopback_node_settings(tmp_path / "node", hl7={"enabled": False})
    assert WarmSrValidator().available, "java and pixelmed (deploy/install-system-packages.sh) are needed"
    folder = settings.results_dir / "st-warm" / "final"
    folder.mkdir(parents=True)
    study_uid, sr = _notice_sr(folder, settings.report)
    node = Node(settings)
    with node.db.transaction() as repos:
        repos.results.add(ReportBundle(study_uid, "test:warm", "COMPLETE", "unavailable", folder,
                                       (ReportObject("sr.dcm", "SR", "2.25.7", sr),)), 0.0)
    node.start()
    try:
        assert node.sr_validator is not None
        wait_until(lambda: node.sr_validator is not None and node.sr_validator.warm_ups == 1, timeout_s=60)
    finally:
        node.stop()


def test_a_new_node_starts_its_validator_without_a_warm_up(tmp_path: Path) -> None:
    node = Node(loopback_node_settings(tmp_path / "node", hl7={"enabled": False}))
    assert node._newest_report_sr() is None
    with node.db.transaction() as repos:
        repos.results.add(ReportBundle("1.2.3", "test:gone", "COMPLETE", "unavailable", tmp_path,
                                       (ReportObject("sr.dcm", "SR", "2.25.8", tmp_path / "gone.dcm"),)), 0.0)
    assert node._newest_report_sr() is None  # its file was purged: nothing to warm up with
