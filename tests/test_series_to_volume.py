"""From DICOM images to a HU volume with its geometry (inference/series_to_volume.py).

Synthetic phantoms only (tests/support/phantoms.py): the answers are known because the
test wrote the images.
"""

from __future__ import annotations

import copy
import io
import random
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from daemon.config import ReportSettings
from daemon.report.seg_builder import build_segmentation
from daemon.report.validation import encode_dataset, validate_report_objects
from domain.errors import UnsupportedSeriesError
from domain.imaging import HematomaMask
from inference.gantry_tilt import gantry_tilt_deg
from inference.series_to_volume import volume_from_datasets
from tests.support.phantoms import PhantomSeries, make_head_ct_series

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

SLICES, ROWS, PIXEL_MM, SLICE_MM = 12, 64, 3.0, 5.0


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomSeries:
    return make_head_ct_series(tmp_path_factory.mktemp("ct"), slices=SLICES, rows=ROWS, pixel_mm=PIXEL_MM,
                               slice_mm=SLICE_MM, noise_hu=0.0)


def _read(phantom: PhantomSeries) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in phantom.paths]


def test_slices_are_ordered_by_position_and_hu_is_rescaled(phantom: PhantomSeries) -> None:
    images = _read(phantom)
    random.Random(3).shuffle(images)
    for ds in images:  # Instance Number must not be what orders the slices
        ds.InstanceNumber = random.Random(int(ds.InstanceNumber)).randint(1, 999)
    volume = volume_from_datasets(images)
    expected = np.clip(np.rint(phantom.hu + 1024), 0, 4095) - 1024
    assert np.array_equal(volume.hu, expected.astype(np.float32))
    assert volume.spacing_mm == pytest.approx((SLICE_MM, PIXEL_MM, PIXEL_MM))
    assert volume.voxel_volume_ml == pytest.approx(SLICE_MM * PIXEL_MM * PIXEL_MM / 1000)


def test_affine_maps_each_voxel_to_its_image_position(phantom: PhantomSeries) -> None:
    images = _read(phantom)
    volume = volume_from_datasets(images)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in images}
    for index in (0, 5, SLICES - 1):
        ds = by_uid[volume.sop_instance_uids[index]]
        row, column = 7, 11
        expected = (np.array(ds.ImagePositionPatient, float) + column * PIXEL_MM * np.array([1, 0, 0])
                    + row * PIXEL_MM * np.array([0, 1, 0]))
        assert volume.affine_lps @ np.array([index, row, column, 1]) == pytest.approx([*expected, 1])


def test_feet_first_and_rotated_series_keep_their_geometry(phantom: PhantomSeries) -> None:
    """Positions that descend, and an in-plane rotation of 30 degrees: slice 0 is still the
    lowest along the normal, and the affine still lands on every Image Position."""
    angle = np.radians(30)
    row_cosine = np.array([np.cos(angle), np.sin(angle), 0.0])
    column_cosine = np.array([-np.sin(angle), np.cos(angle), 0.0])
    images = _read(phantom)
    for index, ds in enumerate(images):
        ds.ImageOrientationPatient = [*row_cosine, *column_cosine]
        ds.ImagePositionPatient = [10.0, -20.0, 100.0 - index * SLICE_MM]  # feet first: z descends
    volume = volume_from_datasets(images)
    assert volume.sop_instance_uids[0] == str(images[-1].SOPInstanceUID)
    assert volume.affine_lps[:3, 0] == pytest.approx([0, 0, SLICE_MM])
    assert volume.affine_lps[:3, 2] == pytest.approx(row_cosine * PIXEL_MM)
    assert volume.affine_lps[:3, 3] == pytest.approx([10.0, -20.0, 100.0 - (SLICES - 1) * SLICE_MM])


@pytest.mark.parametrize(("damage", "reason"), [
    ("tilt_beyond_limit", "beyond the 30 degrees corrected"),
    ("tilt_changes", "straight line"),
    ("missing", "uneven slice spacing"),
    ("duplicate", "repeated"),
    ("matrix", "matrix sizes"),
    ("orientation", "different orientations"),
    ("spacing", "different pixel spacings"),
    ("no_position", "ImagePositionPatient"),
    ("not_orthogonal", "not orthogonal"),
])
def test_inconsistent_series_are_rejected_with_their_reason(phantom: PhantomSeries, damage: str,
                                                           reason: str) -> None:
    images = _read(phantom)
    if damage == "tilt_beyond_limit":  # each slice 5 mm along y per 5 mm: 45 degrees
        for index, ds in enumerate(images):
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1] + 5.0 * index,
                                       ds.ImagePositionPatient[2]]
    elif damage == "tilt_changes":  # the shift grows faster than the slices: no single tilt
        for index, ds in enumerate(images):
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0],
                                       ds.ImagePositionPatient[1] + 0.3 * index ** 2,
                                       ds.ImagePositionPatient[2]]
    elif damage == "missing":
        del images[5]
    elif damage == "duplicate":
        images.append(copy.deepcopy(images[3]))
        images[-1].SOPInstanceUID = pydicom.uid.generate_uid()
    elif damage == "matrix":
        images[4].Rows = ROWS // 2
    elif damage == "orientation":
        images[2].ImageOrientationPatient = [1, 0, 0, 0, 0.996, 0.0872]
    elif damage == "spacing":
        images[2].PixelSpacing = [PIXEL_MM, PIXEL_MM * 1.1]
    elif damage == "no_position":
        del images[6].ImagePositionPatient
    elif damage == "not_orthogonal":
        for ds in images:
            ds.ImageOrientationPatient = [1, 0, 0, 0.6, 0.8, 0]
    with pytest.raises(UnsupportedSeriesError, match=reason):
        volume_from_datasets(images)


def test_small_tilt_within_tolerance_is_accepted(phantom: PhantomSeries) -> None:
    images = _read(phantom)
    for index, ds in enumerate(images):  # 0.02 mm per 5 mm slice: 0.23 degrees
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1] + 0.02 * index,
                                   ds.ImagePositionPatient[2]]
    assert volume_from_datasets(images).hu.shape == (SLICES, ROWS, ROWS)


@pytest.mark.parametrize("tilt_deg", [12.0, 25.0])
def test_tilted_series_keeps_its_slices_on_a_sheared_grid(tmp_path: Path, tilt_deg: float) -> None:
    """Each slice stays the source image it came from; the affine lands on every Image
    Position; the voxel volume is pixel area x the gap between planes, not x the step."""
    series = make_head_ct_series(tmp_path, slices=SLICES, rows=ROWS, pixel_mm=PIXEL_MM, slice_mm=SLICE_MM,
                                 noise_hu=0.0, gantry_tilt_deg=tilt_deg)
    images = _read(series)
    volume = volume_from_datasets(images)
    assert gantry_tilt_deg(volume.affine_lps) == pytest.approx(tilt_deg, abs=1e-6)
    assert volume.spacing_mm == pytest.approx((SLICE_MM, PIXEL_MM, PIXEL_MM))
    assert volume.voxel_volume_ml == pytest.approx(abs(np.linalg.det(volume.affine_lps[:3, :3])) / 1000)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in images}
    for index in (0, SLICES - 1):
        ds = by_uid[volume.sop_instance_uids[index]]
        assert volume.affine_lps @ np.array([index, 0, 0, 1]) == pytest.approx(
            [*np.array(ds.ImagePositionPatient, float), 1])
    expected = np.clip(np.rint(series.hu + 1024), 0, 4095) - 1024
    assert np.array_equal(volume.hu, expected.astype(np.float32))
    assert volume.slice_thickness_mm == SLICE_MM and volume.kvp == 120


def test_multi_frame_image_gives_the_same_volume_and_its_seg_is_valid(phantom: PhantomSeries) -> None:
    """A multi-frame (Legacy Converted Enhanced CT) image made by highdicom from the slices,
    in shuffled order: same HU, same affine; the SEG follows the image's own frame order."""
    singles = _read(phantom)
    shuffled = singles[:]
    random.Random(5).shuffle(shuffled)
    multi = hd.legacy.LegacyConvertedEnhancedCTImage(shuffled, series_instance_uid=hd.UID(), series_number=3,
                                                     sop_instance_uid=hd.UID(), instance_number=1)
    multi = pydicom.dcmread(io.BytesIO(encode_dataset(multi)))
    from_singles, from_multi = volume_from_datasets(singles), volume_from_datasets([multi])
    assert np.array_equal(from_singles.hu, from_multi.hu)
    assert from_multi.affine_lps == pytest.approx(from_singles.affine_lps)
    assert sorted(from_multi.source_frames) == list(range(1, SLICES + 1))

    truth = np.zeros(from_multi.hu.shape, bool)
    truth[4:7, 20:30, 30:40] = True
    seg = build_segmentation([multi], from_multi.geometry, HematomaMask(truth, "hemex-threshold", "1.0.0", learned=False),
                             ReportSettings(), "0.1.0")
    assert int(np.count_nonzero(seg.pixel_array)) == int(truth.sum())
    for item in seg.PerFrameFunctionalGroupsSequence:
        referenced = item.DerivationImageSequence[0].SourceImageSequence[0]
        frame = int(referenced.ReferencedFrameNumber)
        position = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        source_position = float(multi.PerFrameFunctionalGroupsSequence[frame - 1]
                                .PlanePositionSequence[0].ImagePositionPatient[2])
        assert position == pytest.approx(source_position)
    validate_report_objects([seg], require_tools=True)  # dciodvfy: no "Error" lines
