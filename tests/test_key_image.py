"""The key image: the picture (largest-hematoma slice, outline, figures, banner) and its
DICOM Secondary Capture, read back and checked with dciodvfy.

Synthetic phantom (tests/support/phantoms.py): a 12-slice 64 x 64 head CT, 3 mm pixels,
5 mm slices, with an ellipsoid hematoma; the mask is the phantom's own truth, so what is
checked is where the picture and the capture put it, not a masking method. The analysis
figures are typed values made up for the test.
"""

from __future__ import annotations

import io
import random
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset

from daemon.config import ReportSettings
from daemon.report.key_image_builder import largest_area_slice
from daemon.report.key_image_capture import build_key_image_capture, patient_orientation
from daemon.report.key_image_picture import (
    BANNER_RGB,
    BRAIN_WINDOW_HU,
    OUTLINE_RGB,
    key_image_captions,
    png_bytes,
    render_key_image,
)
from daemon.report.validation import encode_dataset, validate_report_objects
from domain.analysis import StudyAnalysis
from domain.brain_score import BrainScore
from domain.clinical import ClinicalVariables
from domain.imaging import HematomaMask
from domain.measurements import HematomaMeasurements
from domain.prediction import NO_MODEL_CONFIGURED, ExpansionPrediction
from domain.study import StudyIdentity
from inference.series_to_volume import slice_hu, volume_from_datasets
from tests.support.phantoms import PhantomSeries, make_head_ct_series

SETTINGS = ReportSettings()
PATIENT_ID, ACCESSION, PATIENT_NAME = "KEY-IMG-4711", "ACC-KEY-0815", "Doe^Jane"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomSeries:
    return make_head_ct_series(tmp_path_factory.mktemp("ct"), slices=12, rows=64, pixel_mm=3.0, slice_mm=5.0,
                               hematoma_radii_mm=(20.0, 15.0, 12.0), noise_hu=0.0, patient_id=PATIENT_ID,
                               accession=ACCESSION)


def _analysis(phantom: PhantomSeries, prediction: ExpansionPrediction | None = None) -> StudyAnalysis:
    return StudyAnalysis(
        identity=StudyIdentity(phantom.study_uid, "st-keyimage", PATIENT_ID, None, ACCESSION, PATIENT_NAME,
                               "20260101120000"),
        series_uid=phantom.series_uid,
        measurements=HematomaMeasurements(volume_ml=15.1, abc2_ml=14.4, diameters_mm=(40.0, 30.0, 24.0),
                                          voxel_count=int(phantom.hematoma.sum()),
                                          intraventricular_extension=False, method_name="hemex-threshold",
                                          method_version="1.2.0"),
        clinical=ClinicalVariables(), prediction=prediction,
        brain_score=BrainScore(None, None, {"volume": 0}, ("hours_onset_to_ct",)),
        completion="PARTIAL", risk_category="unavailable" if prediction is None else "not_validated",
        software_version="0.1.0", prediction_unavailable=None if prediction else NO_MODEL_CONFIGURED)


@pytest.fixture(scope="module")
def picture_and_slice(phantom: PhantomSeries) -> tuple[np.ndarray, int, np.ndarray]:
    index = largest_area_slice(HematomaMask(phantom.hematoma, "hemex-threshold", "1.2.0", learned=False))
    assert index is not None
    hu = slice_hu(pydicom.dcmread(phantom.paths[index]))
    captions = key_image_captions(_analysis(phantom), index + 1, len(phantom.paths))
    return render_key_image(hu, phantom.hematoma[index], captions), index, hu


def _image_part(picture: np.ndarray, rows: int) -> tuple[np.ndarray, int, int]:
    """The CT part of the picture (below the banner) and its top row and scale factor."""
    factor = picture.shape[1] // 64
    banner_rows = int(np.flatnonzero((picture[:, 0] == BANNER_RGB).all(axis=1)).max()) + 1
    return picture[banner_rows:banner_rows + rows * factor], banner_rows, factor


def test_picture_is_the_largest_slice_in_a_brain_window_with_the_mask_outlined(
        phantom: PhantomSeries, picture_and_slice: tuple[np.ndarray, int, np.ndarray]) -> None:
    picture, index, hu = picture_and_slice
    areas = phantom.hematoma.sum(axis=(1, 2))
    assert areas[index] == areas.max()
    assert picture.shape[1] >= 512 and picture.dtype == np.uint8
    image, _, factor = _image_part(picture, 64)
    red = (image == OUTLINE_RGB).all(axis=2)
    mask = np.kron(phantom.hematoma[index], np.ones((factor, factor), bool))
    # The outline lies on the mask, inside its border, and goes all round it.
    assert red.any() and not (red & ~mask).any()
    assert (mask & ~red).any()  # the inside of the hematoma stays visible
    rows, columns = np.nonzero(mask)
    assert red[rows.min(), columns[rows == rows.min()]].all()
    # Everywhere else: the HU in the brain window, gray.
    centre, width = BRAIN_WINDOW_HU
    expected = np.clip((hu - (centre - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    expected = np.kron(expected, np.ones((factor, factor), np.uint8))
    assert np.array_equal(image[~red][:, 0], expected[~red])


def test_png_is_the_same_picture(picture_and_slice: tuple[np.ndarray, int, np.ndarray]) -> None:
    picture = picture_and_slice[0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(picture)))), picture)


def test_captions_name_method_and_risk_status_and_no_patient(phantom: PhantomSeries) -> None:
    unvalidated = ExpansionPrediction(0.42, "Tanioka multimodal CNN model 2", "0.0.1-test", "test weights", False,
                                      (), (), True)
    for analysis in (_analysis(phantom), _analysis(phantom, unvalidated)):
        captions = key_image_captions(analysis, 6, 12)
        text = " ".join((captions.banner, *captions.lines))
        assert "NOT FOR DIAGNOSIS" in captions.banner
        assert "15.1 mL" in text and "hemex-threshold 1.2.0" in text and "st-keyimage" in text
        for identifier in (PATIENT_ID, ACCESSION, PATIENT_NAME, "Doe", phantom.study_uid):
            assert identifier not in text
    assert f"not available ({NO_MODEL_CONFIGURED})" in " ".join(key_image_captions(_analysis(phantom), 6, 12).lines)
    risk = " ".join(key_image_captions(_analysis(phantom, unvalidated), 6, 12).lines)
    assert "42%" in risk and "NOT CLINICALLY VALIDATED" in risk and "0.0.1-test" in risk
    validated = replace(_analysis(phantom, replace(unvalidated, clinically_validated=True)), risk_category="high")
    assert "Expansion risk: high (42%" in " ".join(key_image_captions(validated, 6, 12).lines)


def _capture(phantom: PhantomSeries, picture: np.ndarray, index: int, source: Dataset | None = None,
             frame_number: int | None = None) -> Dataset:
    source = source if source is not None else pydicom.dcmread(phantom.paths[index])
    capture = build_key_image_capture(picture, source, _analysis(phantom), SETTINGS, instance_number=1,
                                      frame_number=frame_number,
                                      orientation=patient_orientation(source, frame_number or 1))
    return pydicom.dcmread(io.BytesIO(encode_dataset(capture)))


def test_capture_passes_dciodvfy(phantom: PhantomSeries,
                                 picture_and_slice: tuple[np.ndarray, int, np.ndarray]) -> None:
    picture, index, _ = picture_and_slice
    validate_report_objects([_capture(phantom, picture, index)], require_tools=True)


def test_capture_is_in_the_study_says_burned_in_and_names_its_slice(
        phantom: PhantomSeries, picture_and_slice: tuple[np.ndarray, int, np.ndarray]) -> None:
    picture, index, _ = picture_and_slice
    capture = _capture(phantom, picture, index)
    source = pydicom.dcmread(phantom.paths[index], stop_before_pixels=True)
    assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert (capture.StudyInstanceUID, capture.PatientID, capture.AccessionNumber) == (
        phantom.study_uid, PATIENT_ID, ACCESSION)
    assert capture.SeriesInstanceUID != phantom.series_uid and capture.SeriesNumber == 9704
    assert capture.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSIS" in capture.SeriesDescription
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert list(capture.PatientOrientation) == ["L", "P"]
    assert np.array_equal(capture.pixel_array, picture)


def test_capture_of_a_multi_frame_image_names_the_frame_and_shows_its_pixels(
        phantom: PhantomSeries, tmp_path: Path) -> None:
    singles = [pydicom.dcmread(p) for p in phantom.paths]
    shuffled = singles[:]
    random.Random(5).shuffle(shuffled)
    multi = hd.legacy.LegacyConvertedEnhancedCTImage(shuffled, series_instance_uid=hd.UID(), series_number=3,
                                                     sop_instance_uid=hd.UID(), instance_number=1)
    multi = pydicom.dcmread(io.BytesIO(encode_dataset(multi)))
    volume = volume_from_datasets([multi])
    index = largest_area_slice(HematomaMask(phantom.hematoma, "hemex-threshold", "1.2.0", learned=False))
    assert index is not None
    frame = volume.source_frames[index]
    assert np.array_equal(slice_hu(multi, frame), volume.hu[index])
    picture = render_key_image(volume.hu[index], phantom.hematoma[index],
                               key_image_captions(_analysis(phantom), index + 1, 12))
    capture = _capture(phantom, picture, index, source=multi, frame_number=frame)
    reference = capture.SourceImageSequence[0]
    assert (reference.ReferencedSOPInstanceUID, int(reference.ReferencedFrameNumber)) == (multi.SOPInstanceUID, frame)
    validate_report_objects([capture], require_tools=True)
