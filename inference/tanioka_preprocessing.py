"""Preprocessing of Tanioka et al. 2024 (Sci Rep): CT + mask -> intraparenchymal hematoma image.

The published steps, in order (see /work/shared/SEEDS.md, study A):

1. HU outside [0, 100] set to 0, then divided by 100 (brain + blood in [0, 1]).
2. Reslice to 2 mm slices; keep 80 slices from the most cranial (the 81st onward is
   dropped; fewer than 80 are padded with zeros at the caudal end).
3. Resample in-plane to 0.5 x 0.5 mm, pad (or crop) to 512 x 512 about the centre.
4. Resize to 256 x 256.
5. Rotate the in-plane image by 90 degrees.

The mask goes through the same geometry (no intensity step) and is re-binarised at 0.2
after every zoom. The model input is CT x mask, shape (256, 256, 80, 1).

Assumptions (the paper and SEEDS do not settle them; stated so they can be checked
against the authors' code):

- The authors worked on NIfTI arrays written by dcm2niix from ordinary supine axial
  DICOM, indexed (x = DICOM column, y = DICOM row flipped, z = slice). We first put
  the CTVolume in that ordinary orientation using its affine (rows run anterior ->
  posterior, columns patient right -> left, whatever order the file stored them in),
  then rebuild the dcm2niix layout, so the final 90 degree rotation is the published
  one and its result is in radiological display orientation (anterior at the top,
  patient's right on the left), which the tests check. Without the first step the
  same head read from a NIfTI (rows stored posterior -> anterior) and from DICOM would
  reach the model flipped.
- Zooms use linear interpolation (``order=1``), as in the Keras 3-D CT example whose
  layout (filters 64/64/128/256, Dense 512, Dropout 0.3, ``ndimage.rotate(img, 90,
  reshape=False)``) the authors' code follows; for a square image that rotation equals
  ``np.rot90``, used here because it is exact.
- Output slice 0 is the most cranial slice (reading "keep 80 from the most cranial,
  drop the 81st onward" as counting from the vertex down).
- Re-binarisation keeps voxels with interpolated value >= 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from domain.errors import UnsupportedSeriesError
from domain.imaging import CTVolume, HematomaMask

ALGORITHM_NAME = "Tanioka 2024 preprocessing"
ALGORITHM_VERSION = "1.1"  # 1.1: in-plane orientation from the affine


@dataclass(frozen=True)
class TaniokaGeometry:
    """Geometry of the preprocessing; the defaults are the published values.

    Tests pass small values (e.g. 4 mm pixels on a 64 px canvas) to stay fast.
    """

    hu_min: float = 0.0
    hu_max: float = 100.0
    slice_mm: float = 2.0
    n_slices: int = 80
    pixel_mm: float = 0.5
    canvas_px: int = 512
    out_px: int = 256
    mask_threshold: float = 0.2
    interpolation_order: int = 1

    def __post_init__(self) -> None:
        if self.slice_mm <= 0 or self.pixel_mm <= 0:
            raise ValueError("slice_mm and pixel_mm must be positive")
        if min(self.n_slices, self.canvas_px, self.out_px) < 1:
            raise ValueError("sizes must be at least 1")

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """Model input shape (H, W, slices, channel)."""
        return (self.out_px, self.out_px, self.n_slices, 1)


PUBLISHED_GEOMETRY = TaniokaGeometry()


def geometry_for_shape(input_shape: tuple[int, ...]) -> TaniokaGeometry:
    """Geometry for a model input (H, W, slices, 1) with the published field of view.

    The published input keeps a 256 mm square (512 px of 0.5 mm) and an 160 mm slab
    (80 slices of 2 mm); smaller test models keep that field of view with coarser
    voxels. ``geometry_for_shape((256, 256, 80, 1))`` is the published geometry.
    """
    height, width, n_slices = input_shape[0], input_shape[1], input_shape[2]
    if height != width:
        raise ValueError(f"the published pipeline makes square images, got {height}x{width}")
    fov_mm = PUBLISHED_GEOMETRY.canvas_px * PUBLISHED_GEOMETRY.pixel_mm
    slab_mm = PUBLISHED_GEOMETRY.n_slices * PUBLISHED_GEOMETRY.slice_mm
    canvas = 2 * height
    return TaniokaGeometry(slice_mm=slab_mm / n_slices, n_slices=n_slices,
                           pixel_mm=fov_mm / canvas, canvas_px=canvas, out_px=height)


@dataclass(frozen=True)
class PreprocessedCase:
    """CT and mask after the published geometry, each (H, W, slices) float32."""

    ct: np.ndarray
    mask: np.ndarray
    source_slices_used: int

    @property
    def hematoma_image(self) -> np.ndarray:
        """The "intraparenchymal hematoma image": CT x mask, (H, W, slices, 1) float32."""
        return (self.ct * self.mask)[..., np.newaxis].astype(np.float32)


def window_hu(hu: np.ndarray, geometry: TaniokaGeometry = PUBLISHED_GEOMETRY) -> np.ndarray:
    """HU outside [hu_min, hu_max] -> 0, then scaled by hu_max (published: /100)."""
    out = np.where((hu >= geometry.hu_min) & (hu <= geometry.hu_max), hu, 0.0)
    return (out / geometry.hu_max).astype(np.float32)


def _patient_axes(volume: CTVolume) -> tuple[int, int, int]:
    """The LPS axis (0 = x, 1 = y, 2 = z) each array axis mostly runs along."""
    dominant = tuple(int(np.argmax(np.abs(volume.affine_lps[:3, a]))) for a in range(3))
    if dominant[0] != 2:
        raise UnsupportedSeriesError("not an axial series: slice axis does not run head-foot")
    if sorted(dominant) != [0, 1, 2]:
        raise UnsupportedSeriesError("in-plane axes do not run along left-right and front-back")
    return dominant  # type: ignore[return-value]


def _to_nifti_layout(array: np.ndarray, volume: CTVolume) -> np.ndarray:
    """(slice, row, column) of ``volume`` -> dcm2niix layout of an ordinary axial CT.

    Returns (x: patient right -> left, y: posterior -> anterior, z: cranial -> caudal),
    the DICOM column, flipped DICOM row and slice of a supine axial series.
    """
    axes = _patient_axes(volume)
    # Array axis holding LPS x, y, z; flip those that run against LPS (x to the left,
    # y posterior, z superior), then flip y and z for the dcm2niix layout.
    order = [axes.index(k) for k in (0, 1, 2)]
    out = np.transpose(array, order)
    signs = [float(volume.affine_lps[k, order[k]]) for k in (0, 1, 2)]
    flips = (signs[0] < 0, signs[1] > 0, signs[2] > 0)
    index = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    return out[index]


def _spacing_xyz(volume: CTVolume) -> tuple[float, float, float]:
    """Voxel size (mm) along LPS x, y and z of ``volume``'s array axes."""
    axes = _patient_axes(volume)
    return tuple(float(volume.spacing_mm[axes.index(k)]) for k in (0, 1, 2))  # type: ignore[return-value]


def _zoom(array: np.ndarray, factors: tuple[float, ...], order: int, binary: bool,
          threshold: float) -> np.ndarray:
    out = ndimage.zoom(array, factors, order=order, mode="constant", cval=0.0, grid_mode=False)
    if binary:
        return (out >= threshold).astype(np.float32)
    return out.astype(np.float32)


def _keep_cranial(array: np.ndarray, n_slices: int) -> np.ndarray:
    """Keep the first ``n_slices`` along z (cranial first); pad zeros caudally."""
    kept = array[:, :, :n_slices]
    missing = n_slices - kept.shape[2]
    if missing > 0:
        kept = np.pad(kept, ((0, 0), (0, 0), (0, missing)))
    return kept


def _pad_or_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Centre ``array`` on a size x size canvas in the first two axes."""
    out = array
    for axis in (0, 1):
        n = out.shape[axis]
        if n > size:
            start = (n - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif n < size:
            before = (size - n) // 2
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, size - n - before)
            out = np.pad(out, pad)
    return out


def _geometry_steps(array: np.ndarray, spacing_xyz: tuple[float, float, float],
                    geometry: TaniokaGeometry, binary: bool) -> np.ndarray:
    """Steps 2-5 on an (x, y, z) array whose z runs cranial -> caudal."""
    zoom = lambda a, f: _zoom(a, f, geometry.interpolation_order, binary,
                              geometry.mask_threshold)
    sx, sy, sz = spacing_xyz
    out = zoom(array, (1.0, 1.0, sz / geometry.slice_mm))
    out = _keep_cranial(out, geometry.n_slices)
    out = zoom(out, (sx / geometry.pixel_mm, sy / geometry.pixel_mm, 1.0))
    out = _pad_or_crop(out, geometry.canvas_px)
    f = geometry.out_px / geometry.canvas_px
    out = zoom(out, (f, f, 1.0))
    return np.ascontiguousarray(np.rot90(out, k=1, axes=(0, 1)))


def preprocess_case(volume: CTVolume, mask: HematomaMask,
                    geometry: TaniokaGeometry = PUBLISHED_GEOMETRY) -> PreprocessedCase:
    """Run the published preprocessing on a CT and its intraparenchymal mask.

    Parameters
    ----------
    volume:
        The CT (slice axis 0, ascending position).
    mask:
        The intraparenchymal hematoma mask on the volume's grid.
    geometry:
        Target geometry; defaults to the published one (output 256 x 256 x 80).

    Returns
    -------
    PreprocessedCase
        CT in [0, 1] and binary mask, both (H, W, slices) in radiological display
        orientation (anterior up, patient's right on the left) with slice 0 the most
        cranial, however the volume's axes were stored; ``hematoma_image`` is the
        model input.
    """
    if mask.mask.shape != volume.hu.shape:
        raise ValueError(f"mask shape {mask.mask.shape} != volume shape {volume.hu.shape}")
    spacing_xyz = _spacing_xyz(volume)
    ct = _to_nifti_layout(window_hu(volume.hu, geometry), volume)
    m = _to_nifti_layout(mask.mask.astype(np.float32), volume)
    used = min(volume.hu.shape[0],
               int(np.ceil(geometry.n_slices * geometry.slice_mm / spacing_xyz[2])))
    return PreprocessedCase(
        ct=_geometry_steps(ct, spacing_xyz, geometry, binary=False),
        mask=_geometry_steps(m, spacing_xyz, geometry, binary=True),
        source_slices_used=used,
    )


def hematoma_image(volume: CTVolume, mask: HematomaMask,
                   geometry: TaniokaGeometry = PUBLISHED_GEOMETRY) -> np.ndarray:
    """The model input (H, W, slices, 1) float32: preprocessed CT x preprocessed mask."""
    return preprocess_case(volume, mask, geometry).hematoma_image
