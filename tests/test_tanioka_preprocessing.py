"""Tanioka 2024 preprocessing on synthetic phantoms with known answers (no patient data).

tests/test_tanioka_reference.py compares it with a re-implementation of the authors' code.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from domain.errors import UnsupportedSeriesError
from domain.imaging import CTVolume, HematomaMask
from inference.gantry_tilt import gantry_tilt_deg
from inference.tanioka_preprocessing import (
    PUBLISHED_GEOMETRY,
    TaniokaGeometry,
    geometry_for_shape,
    hematoma_image,
    preprocess_case,
    window_hu,
)

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database


def phantom(hu: np.ndarray, spacing: tuple[float, float, float], superior_up: bool = True) -> CTVolume:
    """Axial phantom; slice index grows superior (LPS +z) when ``superior_up``."""
    s, r, c = spacing
    affine = np.eye(4)
    affine[:3, 0] = (0, 0, s if superior_up else -s)
    affine[:3, 1] = (0, r, 0)
    affine[:3, 2] = (c, 0, 0)
    n = hu.shape[0]
    return CTVolume(hu=hu.astype(np.float32), affine_lps=affine, spacing_mm=spacing,
                    sop_instance_uids=tuple(f"1.2.3.{i}" for i in range(n)),
                    series_instance_uid="1.2.3", study_instance_uid="1.2")


def full_mask(volume: CTVolume) -> HematomaMask:
    return HematomaMask(mask=np.ones(volume.hu.shape, bool), method_name="test", method_version="0")


# Zoom factors of exactly 1: geometry steps reduce to layout, slice choice and rotation.
IDENTITY = TaniokaGeometry(slice_mm=2.0, n_slices=10, pixel_mm=1.0, canvas_px=8, out_px=8)


def test_window_sets_outside_to_zero_and_scales_by_100() -> None:
    hu = np.array([-1000, -1, 0, 50, 100, 101, 1500], dtype=np.float32)
    assert np.allclose(window_hu(hu), [0, 0, 0, 0.5, 1.0, 0, 0])


def test_display_orientation_after_the_published_rotation() -> None:
    hu = np.zeros((10, 8, 8))
    hu[:, 2, 5] = 60  # row 2, column 5 on every slice; zoom factors of 1 keep it exactly
    out = preprocess_case(phantom(hu, (2.0, 1.0, 1.0)), full_mask(phantom(hu, (2.0, 1.0, 1.0))), IDENTITY)
    assert out.ct.shape == (8, 8, 10)
    assert np.argwhere(out.ct[:, :, 0] > 0).tolist() == [[2, 5]]
    assert out.ct[2, 5, 0] == pytest.approx(0.6)


def restored(volume: CTVolume, flip_rows: bool, flip_columns: bool, swap_in_plane: bool) -> CTVolume:
    """The same head stored another way: rows and/or columns reversed or exchanged, the
    affine changed to match (as a NIfTI written by dcm2niix stores rows reversed)."""
    hu, affine = volume.hu, volume.affine_lps.copy()
    spacing = list(volume.spacing_mm)
    for axis, flip in ((1, flip_rows), (2, flip_columns)):
        if flip:
            affine[:3, 3] += (hu.shape[axis] - 1) * affine[:3, axis]
            affine[:3, axis] *= -1
            hu = np.flip(hu, axis)
    if swap_in_plane:
        hu = np.swapaxes(hu, 1, 2)
        affine[:, [1, 2]] = affine[:, [2, 1]]
        spacing[1], spacing[2] = spacing[2], spacing[1]
    return CTVolume(hu=np.ascontiguousarray(hu), affine_lps=affine, spacing_mm=tuple(spacing),  # type: ignore[arg-type]
                    sop_instance_uids=volume.sop_instance_uids, series_instance_uid="1.2.3",
                    study_instance_uid="1.2")


@pytest.mark.parametrize("flip_rows, flip_columns, swap", [
    (True, False, False), (False, True, False), (True, True, False), (False, False, True),
    (True, False, True)])
def test_same_head_stored_another_way_gives_the_same_input(flip_rows: bool, flip_columns: bool,
                                                           swap: bool) -> None:
    """A NIfTI stores rows posterior -> anterior, DICOM anterior -> posterior: the model
    must see the same image from both (anterior up, patient's right on the left)."""
    hu = np.zeros((10, 8, 6))
    hu[:, 1, 4] = 60  # anterior (row 1), towards the patient's left (column 4)
    hu[3, 6, 0] = 90  # one posterior-right voxel on one slice
    dicom = phantom(hu, (2.0, 1.0, 1.5))
    other = restored(dicom, flip_rows, flip_columns, swap)
    geo = TaniokaGeometry(slice_mm=2.0, n_slices=10, pixel_mm=1.0, canvas_px=8, out_px=8)
    want = preprocess_case(dicom, full_mask(dicom), geo)
    got = preprocess_case(other, full_mask(other), geo)
    assert np.array_equal(got.ct, want.ct) and np.array_equal(got.mask, want.mask)
    # Radiological display: anterior up, the patient's right on the image's left.
    anterior_row, patients_left_col = np.argwhere(want.ct[:, :, 0] > 0)[0]
    posterior_row, patients_right_col = np.argwhere(want.ct[:, :, 3] > 0.8)[0]
    assert anterior_row < posterior_row and patients_right_col < patients_left_col


@pytest.mark.parametrize("superior_up", [True, False])
def test_keeps_the_80_most_superior_slices_with_the_vertex_last(superior_up: bool) -> None:
    """dicom2nifti's LAS puts slice 0 at the bottom; the authors delete the lowest slices
    beyond 80, so the top of the head is slice 79 however the volume is stored."""
    n = 100
    # HU equal to the distance (in slices) from the vertex: 0 at the top of the head.
    from_vertex = np.arange(n)[::-1] if superior_up else np.arange(n)
    hu = np.broadcast_to(from_vertex[:, None, None], (n, 4, 4)).astype(np.float32)
    geo = TaniokaGeometry(slice_mm=2.0, n_slices=80, pixel_mm=1.0, canvas_px=4, out_px=4)
    vol = phantom(hu, (2.0, 1.0, 1.0), superior_up)
    out = preprocess_case(vol, full_mask(vol), geo)
    assert out.ct.shape == (4, 4, 80)
    # Slice k of the output is 79 - k slices below the vertex; the 20 lowest are dropped.
    assert np.allclose(out.ct[1, 1, :], np.arange(80)[::-1] / 100.0, atol=1e-6)


def test_fewer_slices_are_padded_below_with_zeros() -> None:
    hu = np.full((30, 4, 4), 40.0)
    geo = TaniokaGeometry(slice_mm=2.0, n_slices=80, pixel_mm=1.0, canvas_px=4, out_px=4)
    vol = phantom(hu, (2.0, 1.0, 1.0))
    out = preprocess_case(vol, full_mask(vol), geo)
    assert np.allclose(out.ct[:, :, 50:], 0.4)
    assert not out.ct[:, :, :50].any() and not out.mask[:, :, :50].any()


def test_reslice_is_scipys_cubic_zoom_of_the_rounded_spacing() -> None:
    """1 mm slices -> 2 mm: scipy's zoom maps the first and last slice onto the first and
    last (40 slices -> 20, spaced 39/19 mm), with a cubic spline, as the authors ran it."""
    n = 40
    profile = np.random.default_rng(4).uniform(5, 95, n)
    hu = np.broadcast_to(profile[:, None, None], (n, 4, 4)).astype(np.float32)
    geo = TaniokaGeometry(slice_mm=2.0, n_slices=30, pixel_mm=1.0, canvas_px=4, out_px=4)
    vol = phantom(hu, (1.0, 1.0, 1.0))
    out = preprocess_case(vol, full_mask(vol), geo)
    # Order 3, mode "constant"; the in-plane step then clips to [0, 1].
    expected = np.clip(ndimage.zoom(profile / 100.0, 20 / 40), 0, 1)
    assert np.allclose(out.ct[0, 0, 10:], expected, atol=1e-6)
    assert not out.ct[:, :, :10].any()
    linear = np.clip(ndimage.zoom(profile / 100.0, 20 / 40, order=1), 0, 1)
    assert not np.allclose(out.ct[0, 0, 10:], linear, atol=1e-3)  # not the linear zoom


def test_inplane_resample_pad_and_resize_keep_physical_size() -> None:
    # 64 x 64 at 0.25 mm (16 mm field) with an 8 mm square in the middle.
    hu = np.zeros((4, 64, 64))
    hu[:, 16:48, 16:48] = 70
    mask = np.zeros(hu.shape, bool)
    mask[:, 16:48, 16:48] = True
    vol = phantom(hu, (2.0, 0.25, 0.25))
    # 0.5 mm grid -> 32 px, padded to a 64 px canvas (32 mm), resized to 32 px (1 mm each).
    geo = TaniokaGeometry(slice_mm=2.0, n_slices=4, pixel_mm=0.5, canvas_px=64, out_px=32)
    out = preprocess_case(vol, HematomaMask(mask, "test", "0"), geo)
    assert out.mask.shape == (32, 32, 4)
    side = np.sqrt(out.mask[:, :, 1].sum())
    assert 8 <= side <= 10  # 8 mm square on 1 mm pixels, +1 px per edge from the 0.2 cut
    rows, cols = np.nonzero(out.mask[:, :, 1])
    assert abs(rows.mean() - 15.5) <= 1 and abs(cols.mean() - 15.5) <= 1  # centred
    assert out.ct[16, 16, 1] == pytest.approx(0.7, abs=1e-3)


def test_ct_is_clipped_to_the_unit_range_after_the_cubic_zooms() -> None:
    # A sharp 100 HU edge overshoots under a cubic spline; the authors clip it to 1.
    hu = np.zeros((4, 16, 16))
    hu[:, :, 8:] = 100
    vol = phantom(hu, (2.0, 0.75, 0.75))
    geo = TaniokaGeometry(slice_mm=2.0, n_slices=4, pixel_mm=0.5, canvas_px=32, out_px=16)
    out = preprocess_case(vol, full_mask(vol), geo)
    assert out.ct.max() == 1.0 and out.ct.min() == 0.0


def test_hematoma_image_is_ct_times_mask_in_unit_range() -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-200, 300, (10, 8, 8))
    mask = np.zeros(hu.shape, bool)
    mask[3:6, 2:5, 2:6] = True
    vol = phantom(hu, (2.0, 1.0, 1.0))
    case = preprocess_case(vol, HematomaMask(mask, "test", "0"), IDENTITY)
    img = case.hematoma_image
    assert img.shape == (8, 8, 10, 1) and img.dtype == np.float32
    assert set(np.unique(case.mask)) <= {0.0, 1.0}
    assert img.min() >= 0 and img.max() <= 1
    assert np.array_equal(img[..., 0], case.ct * case.mask)
    assert case.mask.sum() == mask.sum()  # identity geometry keeps the mask exactly


def test_published_geometry_output_shape() -> None:
    assert geometry_for_shape((256, 256, 80, 1)) == PUBLISHED_GEOMETRY
    hu = np.full((40, 64, 64), 50.0)
    vol = phantom(hu, (5.0, 4.0, 4.0))  # 256 mm field, 200 mm of 5 mm slices
    img = preprocess_case(vol, full_mask(vol)).hematoma_image
    assert img.shape == PUBLISHED_GEOMETRY.output_shape == (256, 256, 80, 1)
    assert np.allclose(img[128, 128, :], 0.5)


def test_oblique_grid_is_refused() -> None:
    hu = np.zeros((4, 4, 4))
    vol = phantom(hu, (2.0, 1.0, 1.0))
    affine = vol.affine_lps.copy()
    affine[:3, 0] = (1.8, 0, 0.8)  # slices and columns both mostly left-right: oblique
    oblique = CTVolume(hu=vol.hu, affine_lps=affine, spacing_mm=vol.spacing_mm,
                       sop_instance_uids=vol.sop_instance_uids, series_instance_uid="1",
                       study_instance_uid="2")
    with pytest.raises(UnsupportedSeriesError, match="oblique"):
        preprocess_case(oblique, full_mask(oblique), IDENTITY)


def sheared(volume: CTVolume, tilt_deg: float) -> CTVolume:
    """``volume`` with each slice's position moved along the column direction by
    z x tan(tilt): a gantry-tilted acquisition of other pixels (only the geometry)."""
    affine = volume.affine_lps.copy()
    affine[:3, 0] += affine[:3, 1] / np.linalg.norm(affine[:3, 1]) * (
        np.linalg.norm(affine[:3, 0]) * np.tan(np.radians(tilt_deg)))
    return CTVolume(hu=volume.hu, affine_lps=affine, spacing_mm=volume.spacing_mm,
                    sop_instance_uids=volume.sop_instance_uids, series_instance_uid="1.2.3",
                    study_instance_uid="1.2")


@pytest.mark.parametrize("tilt_deg", [0.0, 20.0])
def test_fast_input_equals_the_full_preprocessing(tilt_deg: float) -> None:
    """``hematoma_image`` resamples the CT only where the mask is: same values as the
    whole-volume ``preprocess_case``, on straight and tilted grids."""
    rng = np.random.default_rng(8)
    hu = rng.uniform(-50, 150, (30, 48, 40)).astype(np.float32)
    mask = np.zeros(hu.shape, bool)
    mask[12:19, 20:31, 5:14] = True
    mask[22, 40, 30] = True  # a second, one-voxel component far from the first
    vol = sheared(phantom(hu, (2.5, 1.2, 1.3)), tilt_deg)
    assert gantry_tilt_deg(vol.affine_lps) == pytest.approx(tilt_deg)
    geo = TaniokaGeometry(slice_mm=4.0, n_slices=24, pixel_mm=2.0, canvas_px=64, out_px=32)
    case = preprocess_case(vol, HematomaMask(mask, "test", "0"), geo)
    fast = hematoma_image(vol, HematomaMask(mask, "test", "0"), geo)
    assert case.mask.sum() > 0
    assert np.allclose(fast, case.hematoma_image, atol=1e-6)


def test_empty_mask_gives_an_empty_input() -> None:
    vol = phantom(np.full((10, 8, 8), 40.0), (2.0, 1.0, 1.0))
    empty = HematomaMask(np.zeros(vol.hu.shape, bool), "test", "0")
    assert not hematoma_image(vol, empty, IDENTITY).any()
