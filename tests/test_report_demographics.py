"""A bad demographic field never stops the analysis, and its value never reaches the log.

The probes sent a Patient's Birth Date of "00000000" (common for unidentified trauma
patients) and "1950-06-15": highdicom refused the SEG, the job failed for good, no report
went out, and the raw value was written to hemex.log, jobs.last_error and stderr.

Two synthetic phantom studies (tests/support/phantoms.py), one with each value, go
through dcmtk's storescu into a running node with a real Orthanc as the PACS.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pydicom
import pytest

from daemon.app import Node
from daemon.config import LoggingSettings
from daemon.logging_setup import configure_logging
from daemon.report.source_attributes import sanitised_source_headers
from tests.support.dicom_listener import storescu
from tests.support.node_process import NodeDatabase
from tests.support.node_settings import loopback_node_settings
from tests.support.peers import Orthanc, wait_until
from tests.support.phantoms import make_head_ct_series
from tests.support.required_tools import required_tool

BAD_BIRTH_DATES = ("00000000", "1950-06-15")


def _phantom_with_birth_date(folder: Path, birth_date: str, index: int) -> list[Path]:
    phantom = make_head_ct_series(folder, slices=24, rows=256, pixel_mm=0.9, slice_mm=5.0,
                                  hematoma_radii_mm=(20.0, 16.0, 14.0), patient_id=f"TRAUMA-{index}",
                                  accession=f"ACC-TRAUMA-{index}", seed=index)
    for path in phantom.paths:
        ds = pydicom.dcmread(path)
        ds.PatientBirthDate = birth_date
        ds.save_as(path, enforce_file_format=True)
    return phantom.paths


def test_bad_birth_dates_still_give_sr_and_seg_in_the_pacs(
    tmp_path: Path, orthanc: Orthanc, restore_logging: None, capfd: pytest.CaptureFixture[str],
) -> None:
    required_tool("storescu", "Debian's dcmtk package")
    settings = loopback_node_settings(tmp_path / "node", orthanc)
    configure_logging(LoggingSettings(), settings.log_dir)  # hemex.log and stderr, as `hemex serve` does
    node = Node(settings)
    node.start()
    try:
        for index, birth_date in enumerate(BAD_BIRTH_DATES):
            result = storescu(node.dicom_port, _phantom_with_birth_date(tmp_path / f"ct{index}", birth_date, index))
            assert result.returncode == 0, result.stderr
        # SEG, KOS, key-image capture and SR of both studies reach the PACS.
        wait_until(lambda: len(orthanc.instances()) >= 8, timeout_s=120, interval_s=0.5)
    finally:
        node.stop()
    objects = [pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{i}/file"))) for i in orthanc.instances()]
    assert sorted(str(ds.Modality) for ds in objects) == ["KO", "KO", "OT", "OT", "SEG", "SEG", "SR", "SR"]
    for ds in objects:
        assert ds.get("PatientBirthDate", "") == ""  # type 2: present, empty
        assert str(ds.PatientID).startswith("TRAUMA-")  # the valid attributes are copied
    last_errors = [row[0] or "" for row in NodeDatabase(settings.data_dir).rows("SELECT last_error FROM jobs")]
    # The audit log says where each object went (the endpoint, not only the destination's name).
    audit = [json.loads(line) for line in (settings.log_dir / "audit.log").read_text().splitlines()]
    delivered = [r for r in audit if r["action"] == "delivered" and r["channel"] == "dicom"]
    assert len(delivered) == 8
    assert {r["endpoint"] for r in delivered} == {f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}"}
    for handler in logging.getLogger().handlers:
        handler.flush()
    log_text = (settings.log_dir / "hemex.log").read_text()
    assert "PatientBirthDate" in log_text  # the warning names the attribute...
    stderr = capfd.readouterr().err
    for value in BAD_BIRTH_DATES:  # ...never its value
        assert value not in log_text and value not in stderr
        assert not any(value in error for error in last_errors)


@pytest.mark.parametrize("keyword, value", [
    ("PatientBirthDate", "00000000"), ("PatientBirthDate", "1950-06-15"), ("PatientBirthDate", "19500230"),
    ("StudyDate", "2026"), ("StudyTime", "25:61"), ("PatientSex", "MALE"), ("PatientAge", "45"),
    ("AccessionNumber", "A" * 40), ("PatientName", "x" * 70),
])
def test_each_invalid_attribute_is_emptied_and_named_without_its_value(
    keyword: str, value: str, caplog: pytest.LogCaptureFixture,
) -> None:
    header = pydicom.Dataset()
    header.PatientID, header.PatientSex, header.StudyDate = "P-1", "F", "20260101"
    setattr(header, keyword, value)
    with caplog.at_level(logging.WARNING, logger="daemon.report"):
        (clean,) = sanitised_source_headers([header], "st-test")
    assert clean.get(keyword, "") == ""
    assert clean.PatientID == "P-1"
    assert header.get(keyword) is not None and str(header.get(keyword)) == value  # the input is not changed
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("daemon.report")]
    assert any(keyword in line and "st-test" in line for line in lines)
    assert not any(value in line for line in lines)


def test_the_oru_is_built_from_a_study_date_hl7apy_would_refuse() -> None:
    """hl7apy raised a bare ValueError quoting "00000000120000" for OBR-7 (the job then
    failed, and retried, with the value in its error); the identity's rules leave it out."""
    from dataclasses import replace

    from daemon.config import Hl7Settings
    from daemon.report.oru_builder import build_oru_r01
    from daemon.report.source_attributes import with_valid_identity
    from domain.analysis import StudyAnalysis
    from domain.clinical import ClinicalVariables
    from domain.errors import ReportBuildError
    from domain.measurements import HematomaMeasurements
    from domain.study import StudyIdentity

    bad = StudyAnalysis(
        identity=StudyIdentity(study_uid="1.2.826.0.1.3680043.10.1341.78.1", handle="st-78bb", patient_id="TRAUMA-9",
                               issuer_of_patient_id=None, accession_number="ACC-9", patient_name="Unknown^Trauma",
                               study_datetime="00000000120000"),
        series_uid="1.2.3.4", clinical=ClinicalVariables(), prediction=None, brain_score=None, completion="PARTIAL",
        measurements=HematomaMeasurements(volume_ml=12.0, abc2_ml=13.0, diameters_mm=(30.0, 25.0, 20.0),
                                          voxel_count=999, intraventricular_extension=False,
                                          method_name="hemex-threshold", method_version="1.0.0"),
        risk_category="unavailable", software_version="0.1.0")
    with pytest.raises(ReportBuildError) as refused:
        build_oru_r01(bad, Hl7Settings())
    assert "00000000" not in str(refused.value)
    message = build_oru_r01(replace(bad, identity=with_valid_identity(bad.identity)), Hl7Settings())
    assert b"TRAUMA-9" in message  # the valid identifiers stay
    assert b"00000000120000" not in message and b"OBR|" in message
