"""The NIfTI side of a CTVolume (nibabel): masks written next to each result, and the
NIfTI CTs and masks of a site's training data read in.

A CTVolume is indexed (slice, row, column) in DICOM LPS; NIfTI is (i, j, k) in RAS. So
i = column, j = row, k = slice, and the affine's x and y flip sign.

A gantry-tilted volume is written on an orthogonal grid (one slice per acquired plane,
each moved within its plane: ``gantry_tilt.plane_grid``), as dcm2niix does, because
most NIfTI readers (ITK and the viewers built on it) drop the shear of a sheared affine
and would misplace every slice but the first.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from domain.errors import InvalidInputError
from domain.imaging import CTVolume, HematomaMask, VolumeGeometry
from inference.gantry_tilt import grid_spacing_mm, on_plane_grid

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
_SLICE_ROW_COLUMN_TO_IJK = [2, 1, 0, 3]          # affine column order, also its own inverse


def nifti_affine(volume: CTVolume | VolumeGeometry) -> np.ndarray:
    """The RAS affine of ``volume`` for an (i=column, j=row, k=slice) array."""
    return _ras_affine(volume.affine_lps)


def _ras_affine(affine_lps: np.ndarray) -> np.ndarray:
    return _LPS_TO_RAS @ affine_lps[:, _SLICE_ROW_COLUMN_TO_IJK]


def volume_to_nifti(volume: CTVolume) -> nib.Nifti1Image:
    """The CT in HU as an int16 NIfTI image; a tilted volume on its orthogonal grid
    (air, -1000 HU, where no acquired slice reaches)."""
    hu, affine = on_plane_grid(volume.hu, volume.affine_lps, cval=-1000.0)
    data = np.clip(np.rint(hu), -32768, 32767).astype(np.int16).transpose(2, 1, 0)
    image = nib.Nifti1Image(data, _ras_affine(affine))
    image.header.set_xyzt_units("mm")
    return image


def mask_to_nifti(volume: VolumeGeometry, mask: HematomaMask) -> nib.Nifti1Image:
    """The hematoma mask (1 = hematoma) as a uint8 NIfTI image on the CT's grid; for a
    tilted volume, on the same orthogonal grid as ``volume_to_nifti`` (trilinear, >= 0.5)."""
    if mask.mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.mask.shape} differs from volume shape {volume.shape}")
    values, affine = on_plane_grid(mask.mask, volume.affine_lps, cval=0.0)
    # An orthogonal grid comes back as the boolean mask itself: its bytes are the uint8
    # 0/1 values (a comparison would make a float pass over every voxel).
    labels = values.view(np.uint8) if values.dtype == np.bool_ else (values >= 0.5).astype(np.uint8)
    image = nib.Nifti1Image(labels.transpose(2, 1, 0), _ras_affine(affine))
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = f"{mask.method_name} {mask.method_version}"[:79].encode("ascii", "replace")
    return image


def gzipped(image: nib.Nifti1Image, compresslevel: int = 6) -> bytes:
    """The bytes of a ``.nii.gz`` file of ``image`` (``to_bytes`` alone is an uncompressed
    ``.nii``, which nibabel refuses to read under a ``.gz`` name). A mask, mostly zeros,
    compresses well at level 1 in half the time of level 6."""
    return gzip.compress(image.to_bytes(), compresslevel=compresslevel)


def load_nifti_volume(path: Path) -> CTVolume:
    """A NIfTI CT (i, j, k) in HU as a CTVolume (slice = k, row = j, column = i).

    Raises
    ------
    InvalidInputError
        When the file is not a 3-D image.
    """
    img: Any = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)  # applies scl_slope/inter
    if data.ndim != 3:
        raise InvalidInputError(f"{Path(path).name}: expected a 3-D CT, got shape {data.shape}")
    affine = (_LPS_TO_RAS @ img.affine)[:, _SLICE_ROW_COLUMN_TO_IJK]
    name = Path(path).name
    # From the affine, not the header's zooms: a sheared affine's slice column is longer
    # than the gap between planes, and only the gap gives the voxel volume.
    return CTVolume(hu=np.ascontiguousarray(np.transpose(data, (2, 1, 0))), affine_lps=affine,
                    spacing_mm=grid_spacing_mm(affine),
                    sop_instance_uids=tuple(f"nifti-{name}-{k}" for k in range(data.shape[2])),
                    series_instance_uid=f"nifti-{name}", study_instance_uid=f"nifti-{name}")


def load_nifti_mask(path: Path, volume: CTVolume, method_name: str = "manifest mask",
                    method_version: str = "n/a") -> HematomaMask:
    """A NIfTI mask (non-zero = hematoma) on ``volume``'s grid.

    Raises
    ------
    InvalidInputError
        When its shape is not the volume's.
    """
    loaded: Any = nib.load(str(path))
    mask = np.transpose(np.asarray(loaded.dataobj), (2, 1, 0)) > 0
    if mask.shape != volume.hu.shape:
        raise InvalidInputError(f"{Path(path).name}: mask shape {mask.shape} != CT {volume.hu.shape}")
    return HematomaMask(mask=np.ascontiguousarray(mask), method_name=method_name,
                        method_version=method_version)
