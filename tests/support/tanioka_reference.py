"""The Tanioka et al. 2024 preprocessing as their notebooks run it: the test reference.

Written from the steps of their published notebooks (AI-neurosurg/Multimodal-network-
for-predicting-hematoma-expansion-in-ICH: Conversion_from_DICOM_to_NIfTI, CNN_Model_2,
Multimodal_Model_2), the slow, literal way: whole float64 arrays through
``scipy.ndimage`` with its defaults (cubic spline, ``mode="constant"``), reading only
the NIfTI array and its header, never the affine. Parameterised by a TaniokaGeometry so
tests can shrink it; ``PUBLISHED_GEOMETRY`` gives their constants (2 mm, 80 slices,
0.5 mm, 512, 256).

- ``convert_series``: dicom2nifti with the authors' settings (orthogonality check off,
  resampling on, trilinear, -1000 padding), which writes LAS.
- ``reference_input``: per NIfTI file, HU -> [0, 1] (outside 0-100 -> 0, /100); zoom z
  by round(pixdim[3], 2) / 2 and delete the lowest slices beyond 80 (or prepend zero
  slices); zoom in-plane by pixdim[1] / 0.5, put int((513 - n) / 2) zero rows on each
  side, clip to [0, 1]; zoom by 256 / 512, clip; rotate by 90 degrees. The mask the same,
  binarised at 0.2 after each zoom. Hematoma image: CT - 1 + mask, negatives set to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from inference.tanioka_preprocessing import PUBLISHED_GEOMETRY, TaniokaGeometry


def convert_series(dicom_folder: Path, nifti_path: Path) -> Path:
    """dicom2nifti as the authors configured it (their gantry-tilt conversion)."""
    import dicom2nifti
    from dicom2nifti import settings

    settings.disable_validate_orthogonal()
    settings.enable_resampling()
    settings.set_resample_spline_interpolation_order(1)
    settings.set_resample_padding(-1000)
    try:
        dicom2nifti.dicom_series_to_nifti(str(dicom_folder), str(nifti_path))
    finally:  # the settings are module globals: leave them as other code expects them
        settings.enable_validate_orthogonal()
        settings.disable_resampling()
        settings.set_resample_spline_interpolation_order(0)
        settings.set_resample_padding(0)
    return nifti_path


@dataclass(frozen=True)
class ReferenceInput:
    ct: np.ndarray
    mask: np.ndarray
    hematoma: np.ndarray


def _binarise(image: np.ndarray, threshold: float) -> np.ndarray:
    out = image.copy()
    out[out < threshold] = 0
    out[out >= threshold] = 1
    return out


def _clip(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[out < 0] = 0
    out[out > 1] = 1
    return out


def _reslice(image: np.ndarray, header: nib.Nifti1Header, g: TaniokaGeometry,
             mask: bool) -> np.ndarray:
    factor = header["pixdim"][3].round(g.spacing_decimals) / g.slice_mm
    image = ndimage.zoom(image, (1, 1, factor))
    if mask:
        image = _binarise(image, g.mask_threshold)
    expected = int((header["dim"][3] * factor).round(0))
    if expected > g.n_slices:
        return np.delete(image, np.s_[:expected - g.n_slices], 2)
    if expected < g.n_slices:
        zeros = np.zeros((image.shape[0], image.shape[1], g.n_slices - expected))
        return np.concatenate([zeros, image], 2)
    return image


def _unify(image: np.ndarray, header: nib.Nifti1Header, g: TaniokaGeometry,
           mask: bool) -> np.ndarray:
    magnification = header["pixdim"][1] / g.pixel_mm
    image = ndimage.zoom(image, (magnification, magnification, 1))
    pad_0 = int((g.canvas_px + 1 - image.shape[0]) / 2)
    pad_1 = int((g.canvas_px + 1 - image.shape[1]) / 2)
    image = np.concatenate([np.zeros((pad_0, *image.shape[1:])), image,
                            np.zeros((pad_0, *image.shape[1:]))], 0)
    image = np.concatenate([np.zeros((image.shape[0], pad_1, image.shape[2])), image,
                            np.zeros((image.shape[0], pad_1, image.shape[2]))], 1)
    return _binarise(image, g.mask_threshold) if mask else _clip(image)


def _resize(image: np.ndarray, g: TaniokaGeometry, mask: bool) -> np.ndarray:
    factor = g.out_px / g.canvas_px
    image = ndimage.zoom(image, (factor, factor, 1))
    return _binarise(image, g.mask_threshold) if mask else _clip(image)


def _processed(path: Path, g: TaniokaGeometry, mask: bool) -> np.ndarray:
    loaded = nib.load(str(path))
    image, header = loaded.get_fdata(), loaded.header
    if not mask:
        image[image < g.hu_min] = 0
        image[image > g.hu_max] = 0
        image = image / g.hu_max
    image = _reslice(image, header, g, mask)
    image = _unify(image, header, g, mask)
    image = _resize(image, g, mask)
    return ndimage.rotate(image, 90, reshape=False).round(10)


def reference_input(ct_path: Path, mask_path: Path,
                    geometry: TaniokaGeometry = PUBLISHED_GEOMETRY) -> ReferenceInput:
    """The authors' CT, mask and hematoma image (H, W, slices) of one case, float32."""
    ct = _processed(ct_path, geometry, mask=False).astype(np.float32)
    mask = _processed(mask_path, geometry, mask=True).astype(np.float32)
    hematoma = ct - 1 + mask
    hematoma[hematoma <= 0] = 0
    return ReferenceInput(ct, mask, hematoma)


def authors_nifti_pair(ct_folder: Path, truth: np.ndarray, out_folder: Path) -> tuple[Path, Path]:
    """The CT and hematoma mask as the authors held them: each series converted by
    dicom2nifti, the mask binary on the CT NIfTI's grid as if drawn on it.

    The mask is written as a DICOM series beside the CT (same geometry, pixel 0/1), so a
    tilted mask goes through dicom2nifti's resampling exactly as the CT does; then
    binarised at 0.5 (an expert draws whole voxels).
    """
    import pydicom

    out_folder.mkdir(parents=True, exist_ok=True)
    mask_folder = out_folder / "mask_dicom"
    mask_folder.mkdir(exist_ok=True)
    mask_series_uid = pydicom.uid.generate_uid()
    for path, slice_truth in zip(sorted(ct_folder.glob("*.dcm")), truth):
        ds = pydicom.dcmread(path)
        ds.PixelData = slice_truth.astype(np.uint16).tobytes()
        ds.RescaleIntercept = 0
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesInstanceUID = mask_series_uid
        ds.save_as(mask_folder / path.name, enforce_file_format=True)
    ct_path = convert_series(ct_folder, out_folder / "ct.nii.gz")
    converted = nib.load(str(convert_series(mask_folder, out_folder / "mask_converted.nii.gz")))
    binary = (np.asarray(converted.get_fdata()) >= 0.5).astype(np.uint8)
    mask_path = out_folder / "mask.nii.gz"
    nib.save(nib.Nifti1Image(binary, converted.affine, converted.header), str(mask_path))
    return ct_path, mask_path
