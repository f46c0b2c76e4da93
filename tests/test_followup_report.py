"""The follow-up SR, ORU and alert, built from two synthetic phantom studies (a baseline and
a follow-up a day later, one patient) and the truth masks of their hematomas; the SR is
read back and checked by dciodvfy and pixelmed's DicomSRValidator, like every report object."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
import pytest

from daemon.config import AlertSettings, EmailSettings, Hl7Settings, ReportSettings
from daemon.report.followup_alert import build_followup_payload, email_text, prepare_followup_alert
from daemon.report.followup_oru import build_followup_oru
from daemon.report.followup_sr_builder import build_followup_report
from daemon.report.seg_builder import build_segmentation, hematoma_tracking_uid
from daemon.report.sr_builder import build_measurement_report
from daemon.report.validation import encode_dataset, validate_report_objects
from domain.alerts import AlertAcknowledgement
from domain.analysis import StudyAnalysis
from domain.brain_score import BrainScore
from domain.clinical import ClinicalVariables
from domain.errors import ReportBuildError
from domain.followup import FollowupRules, Role, VolumeReading, observe_change
from domain.imaging import HematomaMask
from domain.measurements import HematomaMeasurements
from domain.outcomes import ObservedOutcome
from domain.prediction import ExpansionPrediction
from domain.study import StudyIdentity
from inference.series_to_volume import volume_from_datasets
from tests.support.phantoms import PhantomSeries, make_head_ct_series
from tests.support.sr_reading import sr_numeric_values, sr_texts, walk_content

pytestmark = pytest.mark.no_database

SETTINGS = ReportSettings()
T0 = datetime(2026, 11, 23, 9, 30)
PREDICTION = ExpansionPrediction(0.71, "Tanioka multimodal CNN model 2", "0.0.1-test", "synthetic test weights",
                                 False, ("pt_inr",), (), False)


def _phantom(folder: Path, radii: tuple[float, float, float], hours: float) -> PhantomSeries:
    return make_head_ct_series(folder, slices=16, rows=64, pixel_mm=3.6, slice_mm=10.0, hematoma_radii_mm=radii,
                               noise_hu=0.0, patient_id="PH-FU-1", accession=f"ACC-FU-{hours:g}",
                               acquired_at=T0 + timedelta(hours=hours))


def _report(phantom: PhantomSeries, analysis: bool = True) -> dict[str, object]:
    datasets = [pydicom.dcmread(p) for p in phantom.paths]
    geometry = volume_from_datasets(datasets).geometry
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in phantom.paths]
    mask = HematomaMask(phantom.hematoma, "hemex-threshold", "1.0.0", learned=False)
    seg = pydicom.dcmread(io.BytesIO(encode_dataset(build_segmentation(headers, geometry, mask, SETTINGS, "0.1.0"))))
    return {"headers": headers, "seg": seg, "volume_ml": float(phantom.hematoma.sum()) * geometry.voxel_volume_ml}


def _baseline_sr(phantom: PhantomSeries, built: dict[str, object]) -> pydicom.Dataset:
    volume = float(built["volume_ml"])  # type: ignore[arg-type]
    analysis = StudyAnalysis(
        identity=StudyIdentity(phantom.study_uid, "st-baseline", "PH-FU-1", "HOSP-A", phantom.accession, None,
                               T0.strftime("%Y%m%d%H%M%S")),
        series_uid=phantom.series_uid,
        measurements=HematomaMeasurements(volume, volume, (30.0, 25.0, 20.0), 100, None, "hemex-threshold", "1.0.0"),
        clinical=ClinicalVariables(), prediction=PREDICTION,
        brain_score=BrainScore(5, None, {"baseline_volume": 5}, ()), completion="COMPLETE",
        risk_category="not_validated", software_version="0.1.0")
    sr = build_measurement_report(analysis, built["headers"], built["seg"], SETTINGS)  # type: ignore[arg-type]
    return pydicom.dcmread(io.BytesIO(encode_dataset(sr)))


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("followup")
    baseline = _phantom(root / "baseline", (22.0, 18.0, 16.0), 0)
    followup = _phantom(root / "followup", (26.0, 22.0, 20.0), 26.5)
    base_built, follow_built = _report(baseline), _report(followup)
    change = observe_change(
        VolumeReading(float(base_built["volume_ml"]), "hemex-threshold", "1.0.0", T0),  # type: ignore[arg-type]
        VolumeReading(float(follow_built["volume_ml"]), "hemex-threshold", "1.0.0",  # type: ignore[arg-type]
                      T0 + timedelta(hours=26.5)), FollowupRules())
    outcome = ObservedOutcome(baseline.study_uid, "st-baseline", followup.study_uid, "st-followup", T0,
                              T0 + timedelta(hours=26.5), Role.FOLLOWUP, change, "hemex-threshold", "1.0.0",
                              "hemex-threshold", "1.0.0", PREDICTION, 5, "0.1.0")
    baseline_sr = _baseline_sr(baseline, base_built)
    sr = build_followup_report(outcome, followup.series_uid, follow_built["headers"],  # type: ignore[arg-type]
                               follow_built["seg"], baseline_sr, SETTINGS, 9704, "0.1.0")  # type: ignore[arg-type]
    identity = StudyIdentity(followup.study_uid, "st-followup", "PH-FU-1", "HOSP-A", followup.accession,
                             "Phantom^Head", (T0 + timedelta(hours=26.5)).strftime("%Y%m%d%H%M%S"))
    return {"baseline": baseline, "followup": followup, "outcome": outcome, "baseline_sr": baseline_sr,
            "sr": sr, "follow_built": follow_built, "identity": identity}


def test_follow_up_sr_passes_dciodvfy_and_sr_validator(studies: dict[str, object]) -> None:
    validate_report_objects([studies["sr"]], require_tools=True)  # type: ignore[list-item]


def test_follow_up_sr_states_both_volumes_the_change_and_the_label(studies: dict[str, object]) -> None:
    sr = pydicom.dcmread(io.BytesIO(encode_dataset(studies["sr"])))  # type: ignore[arg-type]
    outcome: ObservedOutcome = studies["outcome"]  # type: ignore[assignment]
    values = sr_numeric_values(sr)
    assert values["Volume"] == pytest.approx(outcome.change.followup_ml, abs=1e-3)
    assert values["Hematoma volume at baseline CT"] == pytest.approx(outcome.change.baseline_ml, abs=1e-3)
    assert values["Change in hematoma volume since baseline CT"] == pytest.approx(outcome.change.change_ml, abs=1e-3)
    assert values["Relative change in hematoma volume since baseline CT"] == pytest.approx(
        100 * outcome.change.change_relative, abs=0.1)  # type: ignore[operator]
    assert values["Time from baseline CT to this CT"] == pytest.approx(26.5)
    assert outcome.change.expansion is True
    codes = {str(i.ConceptNameCodeSequence[0].CodeMeaning): str(i.ConceptCodeSequence[0].CodeMeaning)
             for i in walk_content(sr) if i.ValueType == "CODE"}
    assert codes["Hematoma expansion observed (> 6 mL or > 33 %)"] == "Yes"
    # The threshold method cannot separate intraventricular blood: the revised definition
    # is decided by the volume rule alone here (it grew).
    assert codes["Expansion, revised definition (volume or new/growing IVH)"] == "Yes"
    assert codes["Role of this CT in the patient's follow-up"] == "First follow-up CT of the baseline"
    text = json.dumps(sr.to_json_dict())
    for named in ("hemex-threshold", "1.0.0", "hemex follow-up comparison", "Tanioka multimodal CNN model 2",
                  "not clinically validated"):
        assert named in text
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.StudyInstanceUID == studies["followup"].study_uid  # type: ignore[attr-defined]


def test_follow_up_sr_references_the_baseline_sr_and_ct(studies: dict[str, object]) -> None:
    sr = studies["sr"]
    baseline: PhantomSeries = studies["baseline"]  # type: ignore[assignment]
    baseline_sr: pydicom.Dataset = studies["baseline_sr"]  # type: ignore[assignment]
    other = {str(item.ReferencedSOPInstanceUID)
             for study in sr.PertinentOtherEvidenceSequence if study.StudyInstanceUID == baseline.study_uid  # type: ignore[attr-defined]
             for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert str(baseline_sr.SOPInstanceUID) in other
    baseline_ct = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in baseline.paths}
    assert baseline_ct <= other
    assert any(str(baseline_sr.SOPInstanceUID) in text for text in sr_texts(sr))  # type: ignore[arg-type]
    # One lesion followed across studies: the baseline report's tracking UID.
    tracking = {str(i.UID) for i in walk_content(sr) if i.ValueType == "UIDREF"}  # type: ignore[arg-type]
    assert str(hematoma_tracking_uid(SETTINGS, baseline.study_uid)) in tracking


def test_a_new_follow_up_report_names_the_previous_one(studies: dict[str, object]) -> None:
    built: dict[str, object] = studies["follow_built"]  # type: ignore[assignment]
    again = build_followup_report(studies["outcome"], studies["followup"].series_uid,  # type: ignore[arg-type,attr-defined]
                                  built["headers"], built["seg"], studies["baseline_sr"], SETTINGS, 9704,  # type: ignore[arg-type]
                                  "0.1.0", predecessor_sr=studies["sr"])  # type: ignore[arg-type]
    assert again.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == studies["sr"].SOPInstanceUID  # type: ignore[attr-defined]
    assert again.InstanceNumber == 2


def test_the_baseline_sr_of_the_same_study_is_refused(studies: dict[str, object]) -> None:
    built: dict[str, object] = studies["follow_built"]  # type: ignore[assignment]
    same = pydicom.Dataset()
    same.StudyInstanceUID = studies["followup"].study_uid  # type: ignore[attr-defined]
    with pytest.raises(ReportBuildError):
        build_followup_report(studies["outcome"], studies["followup"].series_uid,  # type: ignore[arg-type,attr-defined]
                              built["headers"], built["seg"], same, SETTINGS, 9704, "0.1.0")  # type: ignore[arg-type]


def test_follow_up_oru_says_both_volumes_and_the_label(studies: dict[str, object]) -> None:
    message = build_followup_oru(studies["identity"], studies["outcome"], Hl7Settings(), "0.1.0")  # type: ignore[arg-type]
    segments = message.decode().split("\r")
    obr = next(s for s in segments if s.startswith("OBR"))
    assert "HEMEX-ICH-FU" in obr and obr.split("|")[25] == "F"
    obx = {s.split("|")[3].split("^")[0]: s.split("|") for s in segments if s.startswith("OBX")}
    outcome: ObservedOutcome = studies["outcome"]  # type: ignore[assignment]
    assert float(obx["HEMEX-VOL-BASE"][5]) == pytest.approx(outcome.change.baseline_ml, abs=0.05)
    assert float(obx["HEMEX-VOL"][5]) == pytest.approx(outcome.change.followup_ml, abs=0.05)
    assert obx["HEMEX-HE"][5].startswith("Y^") and "hemex-threshold 1.0.0" in obx["HEMEX-VOL"][17]


def test_expansion_alert_carries_change_code_and_link_without_the_name(studies: dict[str, object],
                                                                      tmp_path: Path) -> None:
    ack = AlertAcknowledgement("ref-1", "ABCD-EFGH", "https://hemex.hospital.example/alerts/ack/tok")
    payload = build_followup_payload(studies["identity"], studies["outcome"], "0.1.0", ack)  # type: ignore[arg-type]
    assert payload["change"]["expansion"] is True and payload["acknowledgement"]["code"] == "ABCD-EFGH"
    assert payload["baseline"]["method"] == {"name": "hemex-threshold", "version": "1.0.0"}
    subject, body = email_text(payload)
    assert "PH-FU-1" not in subject and "Phantom" not in body + subject
    assert "https://hemex.hospital.example/alerts/ack/tok" in body and "ABCD-EFGH" in body
    settings = AlertSettings(email=EmailSettings(enabled=True, recipients=["a@test.invalid"]))
    files = prepare_followup_alert(studies["identity"], studies["outcome"], settings, tmp_path, "0.1.0", ack)  # type: ignore[arg-type]
    assert files.acknowledgement == ack and files.email_path is not None and files.email_path.is_file()
    assert json.loads(files.payload_path.read_bytes())["schema"] == "hemex.followup-alert/1"
