"""CTVolume <-> NIfTI (nibabel): axes and the LPS -> RAS flip, on a synthetic volume."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from domain.imaging import CTVolume, HematomaMask
from inference.nifti_io import (
    gzipped,
    load_nifti_mask,
    load_nifti_volume,
    mask_to_nifti,
    volume_to_nifti,
)

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database


def _volume() -> CTVolume:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1000, (5, 6, 7)).astype(np.float32)
    affine = np.array([[0.0, 0.0, 0.5, -30.0],   # column -> x (patient left)
                       [0.0, 0.6, 0.0, -40.0],   # row -> y (posterior)
                       [2.5, 0.0, 0.0, 10.0],    # slice -> z (superior)
                       [0.0, 0.0, 0.0, 1.0]])
    return CTVolume(hu, affine, (2.5, 0.6, 0.5), tuple(str(i) for i in range(5)), "1.2", "1.2.3")


def test_volume_round_trip_keeps_hu_and_geometry(tmp_path: Path) -> None:
    volume = _volume()
    image = volume_to_nifti(volume)
    assert image.shape == (7, 6, 5)  # (i = column, j = row, k = slice)
    # Voxel (slice 2, row 3, column 4) is at LPS (-28, -38.2, 15) = RAS (28, 38.2, 15).
    assert image.affine @ np.array([4, 3, 2, 1]) == pytest.approx([28.0, 38.2, 15.0, 1.0])
    nib.save(image, tmp_path / "ct.nii.gz")
    back = load_nifti_volume(tmp_path / "ct.nii.gz")
    assert np.array_equal(back.hu, volume.hu)
    assert back.affine_lps == pytest.approx(volume.affine_lps)
    assert back.spacing_mm == pytest.approx(volume.spacing_mm)


def test_mask_round_trip_and_description(tmp_path: Path) -> None:
    volume = _volume()
    truth = np.zeros(volume.hu.shape, bool)
    truth[1:3, 2:4, 3:6] = True
    image = mask_to_nifti(volume.geometry, HematomaMask(truth, "hemex-threshold", "1.0.0", learned=False))
    assert image.get_data_dtype() == np.uint8
    assert b"hemex-threshold 1.0.0" in image.header["descrip"].tobytes()
    nib.save(image, tmp_path / "mask.nii.gz")
    assert np.array_equal(load_nifti_mask(tmp_path / "mask.nii.gz", volume).mask, truth)


def test_gzipped_bytes_are_a_readable_nii_gz(tmp_path: Path) -> None:
    volume = _volume()
    truth = np.zeros(volume.hu.shape, bool)
    truth[2, 1:4, 1:5] = True
    path = tmp_path / "mask.nii.gz"
    path.write_bytes(gzipped(mask_to_nifti(volume.geometry, HematomaMask(truth, "m", "1"))))
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic: the name does not lie
    assert np.array_equal(load_nifti_mask(path, volume).mask, truth)
