"""SEG and SR builders, read back and checked with dciodvfy and pixelmed's DicomSRValidator.

Synthetic phantom (built here): a 10-slice 64 x 64 axial CT series, 1 mm pixels, 5 mm
slices, with a 3 x 10 x 10 voxel block as the "hematoma" (300 voxels = 1.5 mL). The
analysis results (prediction, BRAIN score, clinical variables) are typed values made
up for the test; no model runs. The validators are the real Debian tools.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from daemon.config import ReportSettings
from daemon.report.key_image_builder import build_key_images
from daemon.report.seg_builder import build_segmentation
from daemon.report.sr_builder import (
    NO_MODEL_STATEMENT,
    NOT_VALIDATED_STATEMENT,
    build_measurement_report,
)
from daemon.report.validation import (
    SR_VALIDATOR,
    encode_dataset,
    validate_report_objects,
    validate_sr_file,
    validator_errors,
    write_dataset,
)
from daemon.report.warm_validator import WarmSrValidator
from domain.analysis import StudyAnalysis
from domain.brain_score import BrainScore
from domain.clinical import ClinicalVariables
from domain.errors import ReportBuildError
from domain.imaging import CTVolume, HematomaMask, VolumeGeometry
from domain.measurements import HematomaMeasurements
from domain.prediction import ExpansionPrediction, prediction_unavailable_reason
from domain.study import StudyIdentity
from tests.support.sr_reading import sr_numeric_values, sr_texts, walk_content

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

SLICES, ROWS, COLUMNS = 10, 64, 64
PIXEL_MM, SLICE_MM = 1.0, 5.0
SETTINGS = ReportSettings()


def _ct_series() -> list[Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    images = []
    for index in range(SLICES):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Report", "PH-REP", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "ACC-REP", "1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 2, index + 1
        ds.Manufacturer, ds.PositionReferenceIndicator = "Synthetic", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0.0, 0.0, index * SLICE_MM]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [PIXEL_MM, PIXEL_MM], SLICE_MM
        ds.Rows, ds.Columns, ds.SamplesPerPixel = ROWS, COLUMNS, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = 0, 1, 120
        ds.PixelData = np.full((ROWS, COLUMNS), 30, np.int16).tobytes()
        images.append(ds)
    return images


def _volume(images: list[Dataset]) -> VolumeGeometry:
    affine = np.array([[0, 0, PIXEL_MM, 0], [0, PIXEL_MM, 0, 0], [SLICE_MM, 0, 0, 0], [0, 0, 0, 1]], float)
    return CTVolume(
        hu=np.full((SLICES, ROWS, COLUMNS), 30, np.float32),
        affine_lps=affine,
        spacing_mm=(SLICE_MM, PIXEL_MM, PIXEL_MM),
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in images),
        series_instance_uid=str(images[0].SeriesInstanceUID),
        study_instance_uid=str(images[0].StudyInstanceUID),
    ).geometry


def _mask(empty: bool = False) -> HematomaMask:
    mask = np.zeros((SLICES, ROWS, COLUMNS), bool)
    if not empty:
        mask[4:7, 20:30, 30:40] = True
    return HematomaMask(mask=mask, method_name="threshold", method_version="1.0.0", learned=False)


def _headers_shuffled(images: list[Dataset]) -> list[Dataset]:
    """Header-only copies in random order, as the daemon may hand them over."""
    headers = []
    for ds in images:
        header = pydicom.dcmread(io.BytesIO(encode_dataset(ds)), stop_before_pixels=True)
        headers.append(header)
    random.Random(7).shuffle(headers)
    return headers


def _analysis(images: list[Dataset], mask: HematomaMask, completion: str,
              prediction: ExpansionPrediction | None, brain: BrainScore | None,
              clinical: ClinicalVariables) -> StudyAnalysis:
    voxels = int(mask.mask.sum())
    volume_ml = voxels * SLICE_MM * PIXEL_MM * PIXEL_MM / 1000.0
    return StudyAnalysis(
        identity=StudyIdentity(str(images[0].StudyInstanceUID), "st-phantom", "PH-REP", None,
                               "ACC-REP", "Phantom^Report", "20260101120000"),
        series_uid=str(images[0].SeriesInstanceUID),
        measurements=HematomaMeasurements(
            volume_ml=volume_ml, abc2_ml=round(10 * 10 * 15 / 2 / 1000.0, 4) if voxels else 0.0,
            diameters_mm=(10.0, 10.0, 15.0) if voxels else (0.0, 0.0, 0.0), voxel_count=voxels,
            intraventricular_extension=False, method_name="threshold", method_version="1.0.0"),
        clinical=clinical,
        prediction=prediction,
        brain_score=brain,
        completion=completion,  # type: ignore[arg-type]
        risk_category="unavailable" if prediction is None else
        ("not_validated" if not prediction.clinically_validated else "high"),
        software_version="0.1.0",
    )


UNVALIDATED = ExpansionPrediction(
    probability=0.42, model_name="Tanioka multimodal CNN model 2", model_version="0.0.1-test",
    weights_origin="synthetic phantoms — hemex test suite", clinically_validated=False,
    variables_used=(), variables_missing=("anticoagulant_use", "pt_inr"), image_only_fallback=True,
    outside_published_domain=("slices 5 mm thick, above the 2 mm of the published cohorts",),
)


@pytest.fixture(scope="module")
def built() -> dict[str, object]:
    """Preliminary and final report pairs on the phantom, and an empty-mask report."""
    images = _ct_series()
    volume = _volume(images)
    headers = _headers_shuffled(images)
    mask = _mask()
    seg = build_segmentation(headers, volume, mask, SETTINGS, "0.1.0")
    preliminary = _analysis(images, mask, "PARTIAL", UNVALIDATED,
                            BrainScore(None, None, {"volume": 0}, ("hours_onset_to_ct",)),
                            ClinicalVariables(systolic_bp_mmhg=172.0, sex="F"))
    prelim_sr = build_measurement_report(preliminary, headers, seg, SETTINGS)
    final = _analysis(images, mask, "COMPLETE", None,
                      BrainScore(9, 0.257, {"volume": 0, "anticoagulation": 6, "hours": 3}, ()),
                      ClinicalVariables(systolic_bp_mmhg=172.0, diastolic_bp_mmhg=95.0,
                                        anticoagulant_use=True, pt_inr=2.4, hours_onset_to_ct=2.5))
    # As the daemon does for a final report: the SEG read back from disk, not rebuilt.
    seg_from_disk = pydicom.dcmread(io.BytesIO(encode_dataset(seg)))
    final_sr = build_measurement_report(final, headers, seg_from_disk, SETTINGS, predecessor_sr=prelim_sr)
    empty_mask = _mask(empty=True)
    empty_seg = build_segmentation(headers, volume, empty_mask, SETTINGS, "0.1.0")
    empty_sr = build_measurement_report(
        _analysis(images, empty_mask, "COMPLETE", None, None, ClinicalVariables()),
        headers, empty_seg, SETTINGS)
    return {"images": images, "volume": volume, "mask": mask, "seg": seg, "headers": headers,
            "preliminary": preliminary, "prelim_sr": prelim_sr, "final": final, "final_sr": final_sr,
            "empty_seg": empty_seg, "empty_sr": empty_sr}


def _read_back(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(encode_dataset(ds)))


def _text_items(ds: Dataset, meaning: str) -> list[str]:
    return [str(i.TextValue) for i in walk_content(ds)
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeMeaning == meaning]


# --- validity -------------------------------------------------------------------------

def test_every_object_passes_dciodvfy_and_sr_validator(built):
    """All three SRs and both SEGs: no "Error" line from either validator."""
    validate_report_objects(
        [built["prelim_sr"], built["final_sr"], built["empty_sr"], built["seg"], built["empty_seg"]],
        require_tools=True,
    )


def test_validator_failure_is_a_report_build_error(built):
    """An SR whose procedure code is outside CID 100 fails pixelmed's template check."""
    broken = _read_back(built["prelim_sr"])
    for item in walk_content(broken):
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "121058":
            item.ConceptCodeSequence[0].CodeValue = "30799-1"
            item.ConceptCodeSequence[0].CodeMeaning = "CT Head WO contrast"
    with pytest.raises(ReportBuildError, match="DicomSRValidator.*Error.*context group 100"):
        validate_report_objects([broken], require_tools=True)


def test_dciodvfy_failure_is_a_report_build_error(built):
    broken = _read_back(built["seg"])
    del broken.SegmentSequence
    with pytest.raises(ReportBuildError, match="dciodvfy.*Error"):
        validate_report_objects([broken], require_tools=True)


def test_missing_tools_fail_in_tests_and_warn_in_the_daemon(built, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ReportBuildError, match="not installed"):
        validate_report_objects([built["seg"]], require_tools=True)
    with caplog.at_level(logging.WARNING, logger="daemon.report.validation"):
        validate_report_objects([built["seg"]], require_tools=False)
    assert "tool=dciodvfy reason=not-installed" in caplog.text


def test_validator_timeout_is_a_report_build_error(built):
    with pytest.raises(ReportBuildError, match="did not finish"):
        validate_report_objects([built["prelim_sr"]], require_tools=True, timeout_s=0.3)


def test_unencodable_dataset_is_a_report_build_error():
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    with pytest.raises(ReportBuildError, match="cannot be encoded"):
        validate_report_objects([ds])


def test_sr_validator_output_without_completion_counts_as_error():
    assert validator_errors("DicomSRValidator", "java.lang.Exception: boom")
    assert validator_errors("DicomSRValidator", "Warning: x\nIOD validation complete") == []
    assert validator_errors("dciodvfy", "Error - Missing attribute") == ["Error - Missing attribute"]


def test_write_dataset_is_atomic_and_readable(built, tmp_path: Path):
    target = tmp_path / "results" / "sr.dcm"
    write_dataset(built["final_sr"], target)
    assert pydicom.dcmread(target).SOPInstanceUID == built["final_sr"].SOPInstanceUID
    assert [p.name for p in target.parent.iterdir()] == ["sr.dcm"]


# --- SEG ------------------------------------------------------------------------------

def test_seg_frames_match_the_mask_slice_by_slice(built):
    seg = _read_back(built["seg"])
    mask, volume = built["mask"].mask, built["volume"]
    frames = seg.pixel_array.reshape(-1, ROWS, COLUMNS)
    assert int(frames.sum()) == int(mask.sum()) == 300
    assert seg.NumberOfFrames == 3  # empty slices omitted
    for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        source_uid = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        index = volume.sop_instance_uids.index(source_uid)
        np.testing.assert_array_equal(frame.astype(bool), mask[index])
        position = [float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient]
        assert position == [0.0, 0.0, index * SLICE_MM]


def test_seg_describes_segment_and_algorithm(built):
    seg = _read_back(built["seg"])
    segment = seg.SegmentSequence[0]
    assert seg.SegmentationType == "BINARY"
    assert segment.SegmentLabel == "Intraparenchymal hemorrhage"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "50960005"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("threshold", "1.0.0")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Morphological Operations"
    assert seg.SeriesNumber == SETTINGS.seg_series_number
    assert seg.SOPInstanceUID.startswith(SETTINGS.uid_root)
    assert seg.Manufacturer == SETTINGS.manufacturer


def test_empty_mask_gives_a_seg_with_all_frames_empty(built):
    seg = _read_back(built["empty_seg"])
    assert seg.NumberOfFrames == SLICES
    assert int(seg.pixel_array.sum()) == 0
    assert sr_numeric_values(_read_back(built["empty_sr"]))["Volume"] == 0.0


def test_mask_of_another_shape_is_refused(built):
    wrong = HematomaMask(np.zeros((SLICES, ROWS, COLUMNS - 1), bool), "threshold", "1.0.0")
    with pytest.raises(ReportBuildError, match="mask shape"):
        build_segmentation(built["headers"], built["volume"], wrong, SETTINGS, "0.1.0")


def test_missing_source_slice_is_refused(built):
    with pytest.raises(ReportBuildError, match="no source image"):
        build_segmentation(built["headers"][1:], built["volume"], built["mask"], SETTINGS, "0.1.0")


def test_source_image_of_another_size_is_refused(built):
    headers = [pydicom.dcmread(io.BytesIO(encode_dataset(ds))) for ds in built["headers"]]
    headers[0].Rows = ROWS * 2
    with pytest.raises(ReportBuildError, match="source image is"):
        build_segmentation(headers, built["volume"], built["mask"], SETTINGS, "0.1.0")


def test_source_image_of_another_series_is_refused(built):
    headers = [pydicom.dcmread(io.BytesIO(encode_dataset(ds))) for ds in built["headers"]]
    headers[3].SeriesInstanceUID = generate_uid()
    with pytest.raises(ReportBuildError, match="another series"):
        build_segmentation(headers, built["volume"], built["mask"], SETTINGS, "0.1.0")


@pytest.mark.parametrize("root", ["1.2.abc.", "1.02.3", "1." + "2" * 60])
def test_invalid_uid_root_is_refused_when_the_settings_load(root: str) -> None:
    with pytest.raises(ValidationError, match="uid_root"):
        ReportSettings(uid_root=root)
    assert ReportSettings(uid_root="1.2.3").uid_root == "1.2.3."  # the final dot is added


# --- SR -------------------------------------------------------------------------------

def test_sr_volumes_equal_the_analysis(built):
    values = sr_numeric_values(_read_back(built["final_sr"]))
    measurements = built["final"].measurements
    assert values["Volume"] == pytest.approx(measurements.volume_ml, abs=1e-3)
    assert values["Volume"] == pytest.approx(1.5)
    assert values["Volume of ellipsoid"] == pytest.approx(measurements.abc2_ml, abs=1e-3)


def test_sr_names_algorithm_and_version_of_every_measurement(built):
    sr = _read_back(built["prelim_sr"])
    for item in walk_content(sr):
        if item.ValueType == "NUM":
            names = {str(c.ConceptNameCodeSequence[0].CodeMeaning): str(c.TextValue)
                     for c in item.get("ContentSequence", []) if c.ValueType == "TEXT"}
            assert names.get("Algorithm Name") and names.get("Algorithm Version"), item
    texts = sr_texts(sr)
    assert "threshold" in texts and "1.0.0" in texts
    assert "Tanioka multimodal CNN model 2" in texts and "0.0.1-test" in texts


def test_sr_references_the_seg_segment_and_the_source_series(built):
    sr, seg = _read_back(built["final_sr"]), built["seg"]
    referenced = [i for i in walk_content(sr) if i.ValueType == "IMAGE"
                  and i.ConceptNameCodeSequence[0].CodeMeaning == "Referenced Segment"]
    assert referenced
    for item in referenced:
        ref = item.ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert ref.ReferencedSegmentNumber == 1
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    series = {s.SeriesInstanceUID: len(s.ReferencedSOPSequence) for s in evidence}
    assert series[built["images"][0].SeriesInstanceUID] == SLICES
    assert series[seg.SeriesInstanceUID] == 1
    tracking = {str(i.UID) for i in walk_content(sr) if i.ValueType == "UIDREF"
                and i.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Unique Identifier"}
    assert tracking == {seg.SegmentSequence[0].TrackingUID}


def test_completion_and_verification_flags(built):
    prelim, final = _read_back(built["prelim_sr"]), _read_back(built["final_sr"])
    assert (prelim.CompletionFlag, prelim.PreliminaryFlag, prelim.VerificationFlag) == (
        "PARTIAL", "PRELIMINARY", "UNVERIFIED")
    assert (final.CompletionFlag, final.PreliminaryFlag, final.VerificationFlag) == (
        "COMPLETE", "FINAL", "UNVERIFIED")


def test_final_sr_references_the_preliminary(built):
    prelim, final = _read_back(built["prelim_sr"]), _read_back(built["final_sr"])
    predecessor = final.PredecessorDocumentsSequence[0]
    assert predecessor.StudyInstanceUID == prelim.StudyInstanceUID
    ref = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == prelim.SOPInstanceUID
    assert final.SeriesInstanceUID == prelim.SeriesInstanceUID
    assert final.InstanceNumber == prelim.InstanceNumber + 1
    assert "PredecessorDocumentsSequence" not in prelim


def test_unvalidated_prediction_is_labelled_not_for_clinical_use(built):
    sr = _read_back(built["prelim_sr"])
    assert NOT_VALIDATED_STATEMENT in _text_items(sr, "Model statement")
    assert sr_numeric_values(sr)["Predicted probability of hematoma expansion"] == pytest.approx(42.0)
    risk = [i.ConceptCodeSequence[0].CodeMeaning for i in walk_content(sr)
            if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "HEXPRISK"]
    assert risk == ["Not clinically validated"]
    assert "synthetic phantoms — hemex test suite" in _text_items(sr, "Expansion model weights origin")
    assert ("input outside the published domain: slices 5 mm thick, above the 2 mm of the published cohorts"
            in _text_items(sr, "Model statement"))


def test_no_model_is_stated(built):
    sr = _read_back(built["final_sr"])
    assert _text_items(sr, "Model statement") == [NO_MODEL_STATEMENT]
    assert NOT_VALIDATED_STATEMENT not in sr_texts(sr)
    assert "Predicted probability of hematoma expansion" not in sr_numeric_values(sr)


def test_validated_prediction_carries_no_warning_statement(built):
    validated = replace(UNVALIDATED, clinically_validated=True, weights_origin="site model card")
    analysis = replace(built["preliminary"], prediction=validated, risk_category="high")
    sr = build_measurement_report(analysis, built["headers"], built["seg"], SETTINGS)
    assert NOT_VALIDATED_STATEMENT not in sr_texts(sr)
    risk = [i.ConceptCodeSequence[0].CodeValue for i in walk_content(sr)
            if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "HEXPRISK"]
    assert risk == ["15508007"]  # SCT High risk


def test_brain_score_points_and_published_risk(built):
    final = sr_numeric_values(_read_back(built["final_sr"]))
    assert final["BRAIN score for hematoma expansion"] == 9
    assert final["Published risk of expansion at BRAIN score"] == pytest.approx(25.7)
    prelim = _read_back(built["prelim_sr"])
    assert "BRAIN score for hematoma expansion" not in sr_numeric_values(prelim)
    assert _text_items(prelim, "BRAIN score component not available") == ["hours_onset_to_ct"]


def test_clinical_variables_used_and_missing(built):
    prelim, final = _read_back(built["prelim_sr"]), _read_back(built["final_sr"])
    assert _text_items(prelim, "Systolic blood pressure") == ["172 mm[Hg]"]
    missing = _text_items(prelim, "Clinical variable not available")
    assert {m.split()[0] for m in missing} == {
        "anticoagulant_use", "diastolic_bp_mmhg", "pt_inr", "hours_onset_to_ct"}
    assert _text_items(final, "Clinical variable not available") == []
    assert _text_items(final, "INR in Platelet poor plasma by Coagulation assay") == ["2.4 {INR}"]
    anticoagulant = [i.ConceptCodeSequence[0].CodeMeaning for i in walk_content(final)
                     if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "ANTICOAG"]
    assert anticoagulant == ["Yes"]


def test_local_coding_scheme_is_declared(built):
    sr = _read_back(built["final_sr"])
    declared = {item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence}
    used = {i.ConceptNameCodeSequence[0].CodingSchemeDesignator for i in walk_content(sr)}
    assert "99HEMEX" in used and "99HEMEX" in declared
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert sr.SeriesNumber == SETTINGS.sr_series_number


def test_sr_without_source_images_of_the_series_is_refused(built):
    with pytest.raises(ReportBuildError, match="analysed series"):
        build_measurement_report(built["final"], [], built["seg"], SETTINGS)


def test_predecessor_of_another_study_is_refused(built):
    other = _read_back(built["prelim_sr"])
    other.StudyInstanceUID = generate_uid()
    with pytest.raises(ReportBuildError, match="another study"):
        build_measurement_report(built["final"], built["headers"], built["seg"], SETTINGS,
                                 predecessor_sr=other)


def test_sr_without_seg_uses_measurement_groups_without_roi(built):
    sr = build_measurement_report(built["final"], built["headers"], None, SETTINGS)
    assert sr_numeric_values(sr)["Volume"] == pytest.approx(1.5)
    assert not [i for i in walk_content(sr) if i.ValueType == "IMAGE"]


def test_learned_masking_methods_are_named_artificial_intelligence() -> None:
    images = _ct_series()
    mask = replace(_mask(), method_name="blast-ct", learned=True)
    seg = build_segmentation(images, _volume(images), mask, SETTINGS, "0.1.0")
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"


def test_a_configured_model_that_could_not_run_is_not_called_absent(built):
    reason = prediction_unavailable_reason(True, ("pt_inr", "hours_onset_to_ct"))
    analysis = replace(built["final"], prediction_unavailable=reason)
    sr = build_measurement_report(analysis, built["headers"], built["seg"], SETTINGS)
    assert _text_items(sr, "Model statement") == [reason]
    assert "pt_inr, hours_onset_to_ct" in reason and NO_MODEL_STATEMENT not in sr_texts(sr)


def test_key_images_point_at_the_largest_hematoma_slice(built):
    mask = _mask()
    mask.mask[5, 10:35, 10:40] = True  # slice 5 now holds the most hematoma
    kos = build_key_images(built["preliminary"], built["headers"], built["volume"], mask, SETTINGS)
    assert kos is not None
    back = _read_back(kos)
    assert back.Modality == "KO" and back.SeriesNumber == SETTINGS.kos_series_number
    referenced = [str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                  for item in walk_content(back) if item.ValueType == "IMAGE"]
    assert referenced == [built["volume"].sop_instance_uids[5]]
    assert back.ConceptNameCodeSequence[0].CodeValue == "113000"  # Of Interest
    description = " ".join(sr_texts(back))
    assert "threshold 1.0.0" in description and "1.5 mL" in description
    validate_report_objects([kos], require_tools=True)
    assert build_key_images(built["preliminary"], built["headers"], built["volume"], _mask(empty=True),
                            SETTINGS) is None


# --- the warm DicomSRValidator -------------------------------------------------------

@pytest.fixture(scope="module")
def warm_validator() -> Iterator[WarmSrValidator]:
    validator = WarmSrValidator()
    assert validator.available, "java and pixelmed (deploy/install-system-packages.sh) are needed"
    validator.start()
    yield validator
    validator.close()


def _procedure_outside_cid_100(built: dict[str, object]) -> Dataset:
    broken = _read_back(built["prelim_sr"])  # type: ignore[arg-type]
    for item in walk_content(broken):
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "121058":
            item.ConceptCodeSequence[0].CodeValue = "30799-1"
            item.ConceptCodeSequence[0].CodeMeaning = "CT Head WO contrast"
    return broken


def _report_lines(output: str) -> list[str]:
    """The validator's report, without the JVM's own note on its options."""
    return [line.strip() for line in output.splitlines()
            if line.strip() and not line.startswith("NOTE: Picked up JDK_JAVA_OPTIONS")]


def test_the_warm_validator_gives_the_one_shot_verdict(built, warm_validator, tmp_path: Path):
    """The same report, line for line (errors, warnings, what it found), from the warm JVM
    (with its document naming, java/HemexSrValidatorServer.java) and from the command
    line, for a valid SR and for one with an error."""
    validate_report_objects([built["prelim_sr"], built["final_sr"]], require_tools=True,
                            sr_validator=warm_validator)
    valid = tmp_path / "valid.dcm"
    write_dataset(built["final_sr"], valid)  # type: ignore[arg-type]
    assert _report_lines(warm_validator.validate(valid, timeout_s=120)) == _report_lines(
        validate_sr_file(valid, None, timeout_s=120))
    path = tmp_path / "broken.dcm"
    write_dataset(_procedure_outside_cid_100(built), path)
    one_shot_output = validate_sr_file(path, None, timeout_s=120)
    warm_output = warm_validator.validate(path, timeout_s=120)
    assert _report_lines(warm_output) == _report_lines(one_shot_output)
    one_shot = validator_errors(SR_VALIDATOR, one_shot_output)
    warm = validator_errors(SR_VALIDATOR, warm_output)
    assert warm == one_shot and any("context group 100" in line for line in warm)
    with pytest.raises(ReportBuildError, match="DicomSRValidator.*Error.*context group 100"):
        validate_report_objects([_procedure_outside_cid_100(built)], require_tools=True,
                                sr_validator=warm_validator)


def test_a_dead_warm_validator_is_restarted_and_the_sr_still_checked(built, tmp_path: Path, caplog):
    validator = WarmSrValidator()
    validator.start()
    try:
        path = tmp_path / "sr.dcm"
        write_dataset(built["final_sr"], path)  # type: ignore[arg-type]
        assert validator_errors(SR_VALIDATOR, validator.validate(path, timeout_s=120)) == []
        pid = validator.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with (caplog.at_level(logging.WARNING, logger="daemon.report.validation"),
              pytest.raises(ReportBuildError, match="context group 100")):
            validate_report_objects([_procedure_outside_cid_100(built)], require_tools=True,
                                    sr_validator=validator)
        assert "one-shot DicomSRValidator instead" in caplog.text
        # The next request starts a new JVM.
        assert validator_errors(SR_VALIDATOR, validator.validate(path, timeout_s=120)) == []
    finally:
        validator.close()


def test_without_java_the_warm_validator_is_not_available(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not WarmSrValidator().available


# --- a method that separates the kinds of blood (blast-ct's output shape) ---------------

def test_separated_classes_get_their_own_segments_volumes_and_statements():
    """A mask with intraventricular and extra-axial blood and oedema (as blast-ct gives;
    built here by hand, no network runs): the SEG has four segments, the SR one volume
    group per class on its own segment, and the method's notes as statements; both pass
    dciodvfy and DicomSRValidator. A method with no such classes keeps one segment."""
    images = _ct_series()
    volume = _volume(images)
    headers = _headers_shuffled(images)
    shape = (SLICES, ROWS, COLUMNS)
    iph, ivh, eah, oedema = (np.zeros(shape, bool) for _ in range(4))
    iph[4:7, 20:30, 30:40] = True
    ivh[5:7, 40:44, 30:34] = True  # 2 x 4 x 4 voxels of 5 mm^3 = 0.16 mL
    oedema[4:7, 18:20, 30:40] = True
    notes = ("BLAST-CT v1 (Apache-2.0), ensemble of 3 of 12 models on cpu:0", "clinically validated: no")
    mask = HematomaMask(mask=iph, method_name="blast-ct", method_version="v1+hemex.1.0 models 8,10,11",
                        intraventricular=ivh, extra_axial=eah, perilesional_oedema=oedema, learned=True,
                        notes=notes)
    seg = build_segmentation(headers, volume, mask, SETTINGS, "0.1.0")
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert labels == ["Intraparenchymal hemorrhage", "Intraventricular hemorrhage", "Extra-axial hemorrhage",
                      "Perilesional oedema"]
    voxel_ml = SLICE_MM * PIXEL_MM * PIXEL_MM / 1000.0
    analysis = dataclasses.replace(
        _analysis(images, mask, "COMPLETE", None, None, ClinicalVariables()),
        measurements=HematomaMeasurements(
            volume_ml=iph.sum() * voxel_ml, abc2_ml=0.75, diameters_mm=(10.0, 10.0, 15.0),
            voxel_count=int(iph.sum()), intraventricular_extension=True, method_name=mask.method_name,
            method_version=mask.method_version, intraventricular_volume_ml=ivh.sum() * voxel_ml,
            extra_axial_volume_ml=0.0, perilesional_oedema_volume_ml=oedema.sum() * voxel_ml,
            method_notes=notes))
    sr = build_measurement_report(analysis, headers, seg, SETTINGS)
    validate_report_objects([sr, seg], require_tools=True)
    read = _read_back(sr)
    groups = [item for item in walk_content(read)
              if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeMeaning == "Measurement Group"]
    by_tracking = {}
    for group in groups:
        texts = {str(i.ConceptNameCodeSequence[0].CodeMeaning): i for i in group.ContentSequence}
        identifier = str(texts["Tracking Identifier"].TextValue)
        segment = next(i for i in group.ContentSequence if i.ValueType == "IMAGE")
        number = int(segment.ReferencedSOPSequence[0].ReferencedSegmentNumber)
        volumes = [float(i.MeasuredValueSequence[0].NumericValue) for i in group.ContentSequence
                   if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeMeaning == "Volume"]
        by_tracking.setdefault(identifier, (number, volumes))
    assert by_tracking["Intraventricular hemorrhage"] == (2, [pytest.approx(0.16)])
    assert by_tracking["Extra-axial hemorrhage"] == (3, [0.0])
    assert by_tracking["Perilesional oedema"] == (4, [pytest.approx(oedema.sum() * voxel_ml)])
    assert by_tracking["Intraparenchymal hematoma"][0] == 1
    statements = _text_items(read, "Model statement")
    assert [f"hematoma masking: {n}" for n in notes] == [s for s in statements if s.startswith("hematoma masking")]
    threshold_seg = build_segmentation(headers, volume, _mask(), SETTINGS, "0.1.0")
    assert len(threshold_seg.SegmentSequence) == 1
