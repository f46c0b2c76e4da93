"""The CT and hematoma mask of one training or evaluation case.

The CT is a NIfTI file or a folder holding the DICOM images of one series (read as the
daemon reads a series, with the same geometry checks). The mask is a NIfTI on that CT's
grid, matched voxel for voxel through the two affines, so a mask drawn on a dcm2niix
conversion (rows stored the other way round) still lands on the right voxels. With no
mask, the node's configured automatic method makes one: the authors drew theirs by
hand and name automatic segmentation as what was missing for clinical use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from domain.errors import InvalidInputError, UnsupportedSeriesError
from domain.imaging import CTVolume, HematomaMask
from inference.nifti_io import load_nifti_volume
from inference.parameters import GeometryLimits
from inference.series_to_volume import volume_from_datasets

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# A mask voxel must map onto a CT voxel centre within this fraction of a voxel.
_GRID_TOLERANCE = 0.01


def read_dicom_folder(folder: Path, settings: GeometryLimits | None = None) -> CTVolume:
    """The HU volume of the one series whose images are in ``folder`` (not recursive).

    Files that are not DICOM, or DICOM without pixels (a DICOMDIR), are skipped.

    Raises
    ------
    InvalidInputError
        No images, images of several series, or geometry the daemon would refuse.
    """
    datasets = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            continue  # a README or checksum list beside the images
        if "PixelData" in ds:
            datasets.append(ds)
    if not datasets:
        raise InvalidInputError(f"{folder.name}: no DICOM images in the folder")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) != 1:
        raise InvalidInputError(f"{folder.name}: {len(series)} series in one folder; give one series per folder")
    try:
        return volume_from_datasets(datasets, settings)
    except UnsupportedSeriesError as exc:
        raise InvalidInputError(f"{folder.name}: {exc}") from exc


def load_ct(path: Path) -> CTVolume:
    """A case's CT: a folder of one DICOM series, or a NIfTI file in HU."""
    if not path.exists():
        raise InvalidInputError(f"CT not found: {path}")
    return read_dicom_folder(path) if path.is_dir() else load_nifti_volume(path)


def _grid_map(mask_affine_ras: np.ndarray, volume: CTVolume, mask_shape: tuple[int, ...],
              name: str) -> tuple[list[int], list[bool]]:
    """For each CT axis, the mask axis on it and whether it runs the other way.

    Raises InvalidInputError unless the mask's voxel centres are the CT's (same grid,
    any axis order or direction).
    """
    ijk_to_ct = np.linalg.inv(volume.affine_lps) @ (_LPS_TO_RAS @ mask_affine_ras)
    rotation, offset = ijk_to_ct[:3, :3], ijk_to_ct[:3, 3]
    signed = np.rint(rotation)
    if (np.abs(rotation - signed).max() > _GRID_TOLERANCE
            or sorted(np.abs(signed).sum(axis=0).tolist()) != [1, 1, 1]
            or sorted(np.abs(signed).sum(axis=1).tolist()) != [1, 1, 1]):
        raise InvalidInputError(f"{name}: the mask's voxels are not the CT's (different spacing "
                                "or orientation); resample it onto the CT grid")
    source = [int(np.flatnonzero(signed[a])[0]) for a in range(3)]
    reversed_ = [bool(signed[a, source[a]] < 0) for a in range(3)]
    for a in range(3):
        start = volume.hu.shape[a] - 1 if reversed_[a] else 0
        if abs(offset[a] - start) > _GRID_TOLERANCE or mask_shape[source[a]] != volume.hu.shape[a]:
            raise InvalidInputError(f"{name}: the mask does not cover the CT's grid (shifted or "
                                    f"another size: mask {mask_shape}, CT {volume.hu.shape})")
    return source, reversed_


def mask_on_ct_grid(path: Path, volume: CTVolume) -> HematomaMask:
    """A NIfTI mask (non-zero = hematoma) placed on ``volume``'s voxels via both affines.

    Raises
    ------
    InvalidInputError
        The file is not a 3-D image on the CT's grid.
    """
    if not path.is_file():
        raise InvalidInputError(f"mask not found: {path}")
    image: Any = nib.load(str(path))
    data = np.asarray(image.dataobj)
    if data.ndim != 3:
        raise InvalidInputError(f"{path.name}: expected a 3-D mask, got shape {data.shape}")
    source, reversed_ = _grid_map(np.asarray(image.affine, dtype=np.float64), volume, data.shape, path.name)
    mask = np.transpose(data, source) > 0
    mask = mask[tuple(slice(None, None, -1) if r else slice(None) for r in reversed_)]
    return HematomaMask(mask=np.ascontiguousarray(mask), method_name="manifest mask", method_version="n/a")
