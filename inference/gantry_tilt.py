"""Gantry tilt: the shear of a tilted series, and the orthogonal grids that undo it.

With the gantry tilted (routine in head CT, to keep the lenses out of the beam), slice
k lies k x ``step`` from slice 0 while ``step`` is not parallel to the image plane's
normal (row x column direction cosines): the voxel grid is sheared. A CTVolume keeps
that acquired grid, with ``step`` as its affine's slice column, so each slice is one
source image with the scanner's own voxels (the SEG overlays them one to one) and a
voxel's volume is the affine's determinant: pixel area x the gap between planes
along the normal (``grid_spacing_mm``), not x the length of ``step``.

What needs an orthogonal grid resamples onto one, trilinearly (``resample_box``):

- ``dicom2nifti_grid``: the grid dicom2nifti 2.6 (the authors' converter, with their
  settings: resampling on, order 1, padding -1000 HU) builds for a non-orthogonal
  series, for the Tanioka preprocessing. Axes along the image's columns (towards the
  patient's left), rows (towards anterior) and the plane normal (towards superior);
  the bounding box of the acquired grid's corners; voxel sizes as the NIfTI header
  stores them (float32), so the slice spacing is the length of ``step``.
- ``plane_grid``: one slice per acquired plane (spacing = gap along the normal), each
  slice moved within its own plane (the correction dcm2niix makes), for NIfTI export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# In-plane drift of the last slice relative to the first, in pixels, under which a
# series counts as orthogonal (DICOM positions carry rounding of this order).
_ORTHOGONAL_DRIFT_PX = 0.05


@dataclass(frozen=True)
class OrthogonalGrid:
    """A voxel grid with orthogonal axes: index (a, b, c) -> LPS mm through ``affine_lps``."""

    affine_lps: np.ndarray
    shape: tuple[int, int, int]


def slice_normal(affine_lps: np.ndarray) -> np.ndarray:
    """Unit normal of the image plane, pointing the way the slice index grows."""
    normal = np.cross(affine_lps[:3, 2], affine_lps[:3, 1])
    normal /= np.linalg.norm(normal)
    return normal if float(np.dot(normal, affine_lps[:3, 0])) >= 0 else -normal


def gantry_tilt_deg(affine_lps: np.ndarray) -> float:
    """Angle between the slice step (affine column 0) and the image plane's normal."""
    step = affine_lps[:3, 0]
    cosine = float(np.dot(step, slice_normal(affine_lps))) / float(np.linalg.norm(step))
    return math.degrees(math.acos(min(1.0, cosine)))


def grid_spacing_mm(affine_lps: np.ndarray) -> tuple[float, float, float]:
    """(gap between slice planes along the normal, row spacing, column spacing) in mm.

    Their product is the voxel volume of any affine, sheared or not.
    """
    step = affine_lps[:3, 0]
    return (float(np.dot(step, slice_normal(affine_lps))), float(np.linalg.norm(affine_lps[:3, 1])),
            float(np.linalg.norm(affine_lps[:3, 2])))


def is_sheared(affine_lps: np.ndarray, n_slices: int) -> bool:
    """Whether the last slice drifts within its plane, relative to the first, by more
    than a twentieth of a pixel: only then is a resampling worth its blur."""
    step = affine_lps[:3, 0]
    in_plane = step - float(np.dot(step, slice_normal(affine_lps))) * slice_normal(affine_lps)
    pixel = min(np.linalg.norm(affine_lps[:3, 1]), np.linalg.norm(affine_lps[:3, 2]))
    return float(np.linalg.norm(in_plane)) * max(n_slices - 1, 0) / float(pixel) > _ORTHOGONAL_DRIFT_PX


def _corners(affine_lps: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """LPS positions (8, 3) of the corner voxel centres of a grid."""
    ends = [(0, n - 1) for n in shape[:3]]
    index = np.array([[a, b, c, 1.0] for a in ends[0] for b in ends[1] for c in ends[2]])
    return (affine_lps @ index.T).T[:, :3]


def _bounding_grid(axes: np.ndarray, voxel_mm: np.ndarray, corners: np.ndarray) -> OrthogonalGrid:
    """The grid along unit ``axes`` (rows) holding ``corners``, from their lowest corner."""
    projected = corners @ axes.T
    low, high = projected.min(axis=0), projected.max(axis=0)
    shape = np.ceil((high - low) / voxel_mm).astype(np.int64) + 1
    affine = np.eye(4)
    affine[:3, :3] = (axes * voxel_mm[:, None]).T
    affine[:3, 3] = low @ axes
    return OrthogonalGrid(affine, (int(shape[0]), int(shape[1]), int(shape[2])))


def dicom2nifti_grid(affine_lps: np.ndarray, shape: tuple[int, int, int],
                     left_right_axis: int, front_back_axis: int) -> OrthogonalGrid:
    """dicom2nifti's orthogonal grid for an axial series, indexed (x left, y anterior, z up).

    ``left_right_axis`` and ``front_back_axis`` are the volume's array axes that run
    mostly along the patient's left-right and front-back (the image's column and row
    axes of an axial series).
    """
    along_x = affine_lps[:3, left_right_axis] / np.linalg.norm(affine_lps[:3, left_right_axis])
    along_y = affine_lps[:3, front_back_axis] / np.linalg.norm(affine_lps[:3, front_back_axis])
    x = along_x if along_x[0] >= 0 else -along_x  # LPS +x is the patient's left
    y = along_y if along_y[1] <= 0 else -along_y  # LPS -y is anterior
    z = np.cross(y, x)
    z /= np.linalg.norm(z)
    y = np.cross(x, z)
    y /= np.linalg.norm(y)
    slice_axis = 3 - left_right_axis - front_back_axis
    # The NIfTI header holds voxel sizes as float32, and dicom2nifti sizes its grid with them.
    voxel = np.array([np.float32(np.linalg.norm(affine_lps[:3, a]))
                      for a in (left_right_axis, front_back_axis, slice_axis)], dtype=np.float64)
    return _bounding_grid(np.stack([x, y, z]), voxel, _corners(affine_lps, shape))


def plane_grid(affine_lps: np.ndarray, shape: tuple[int, int, int]) -> OrthogonalGrid:
    """One slice per acquired plane, indexed (slice, row, column) like the volume."""
    normal = slice_normal(affine_lps)
    column_axis = affine_lps[:3, 1] / np.linalg.norm(affine_lps[:3, 1])
    row_axis = affine_lps[:3, 2] / np.linalg.norm(affine_lps[:3, 2])
    gap, row_mm, column_mm = grid_spacing_mm(affine_lps)
    corners = _corners(affine_lps, shape)
    axes = np.stack([normal, column_axis, row_axis])
    grid = _bounding_grid(axes, np.array([gap, row_mm, column_mm]), corners)
    # The planes themselves fix the slice positions: as many as acquired, none added by
    # rounding the bounding box.
    return OrthogonalGrid(grid.affine_lps, (shape[0], grid.shape[1], grid.shape[2]))


def resample_box(source: np.ndarray, source_affine: np.ndarray, grid: OrthogonalGrid,
                 box: tuple[tuple[int, int], ...], cval: float) -> np.ndarray:
    """Trilinear samples of ``source`` at the grid voxels ``box`` ((start, stop) per axis).

    Samples outside the source get ``cval`` (scipy ``mode="constant"``, as dicom2nifti
    uses it). Only the part of ``source`` the box reaches is read. Returns float32.
    """
    out_shape = tuple(stop - start for start, stop in box)
    if min(out_shape) <= 0:
        return np.zeros(tuple(max(n, 0) for n in out_shape), np.float32)
    to_source = np.linalg.inv(source_affine) @ grid.affine_lps
    matrix, offset = to_source[:3, :3], to_source[:3, 3]
    start = np.array([s for s, _ in box], dtype=np.float64)
    reach = (matrix @ (_corner_offsets(out_shape).T + start[:, None])).T + offset
    # One voxel beyond what the box reaches, so a cropped edge never counts as outside.
    low = np.clip(np.floor(reach.min(axis=0)).astype(np.int64) - 1, 0, np.array(source.shape) - 1)
    high = np.clip(np.ceil(reach.max(axis=0)).astype(np.int64) + 2, 1, np.array(source.shape))
    if np.any(high <= low):
        return np.full(out_shape, cval, np.float32)
    window = source[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    return ndimage.affine_transform(np.asarray(window, np.float32), matrix,
                                    offset=matrix @ start + offset - low, output_shape=out_shape,
                                    order=1, mode="constant", cval=cval, prefilter=False,
                                    output=np.float32)


def _corner_offsets(shape: tuple[int, ...]) -> np.ndarray:
    ends = [(0, n - 1) for n in shape]
    return np.array([[a, b, c] for a in ends[0] for b in ends[1] for c in ends[2]], dtype=np.float64)


def on_plane_grid(array: np.ndarray, affine_lps: np.ndarray,
                  cval: float) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (slice, row, column) of a sheared grid resampled onto ``plane_grid``:
    (float32 array, its orthogonal affine). Orthogonal grids come back unchanged."""
    if not is_sheared(affine_lps, array.shape[0]):
        return array, affine_lps
    grid = plane_grid(affine_lps, array.shape)  # type: ignore[arg-type]
    box = tuple((0, n) for n in grid.shape)
    return resample_box(array, affine_lps, grid, box, cval), grid.affine_lps  # type: ignore[arg-type]
