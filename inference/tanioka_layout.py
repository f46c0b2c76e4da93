"""A CTVolume as the Tanioka authors' NIfTI files held it: LAS, as dicom2nifti writes it.

The authors converted each DICOM series with dicom2nifti (notebook
Conversion_from_DICOM_to_NIfTI: resampling on, trilinear, -1000 HU padding), which
stores the array LAS: x runs to the patient's left, y to anterior, z to superior, so
slice 0 is the lowest. A gantry-tilted series is resampled onto dicom2nifti's
orthogonal grid (``gantry_tilt.dicom2nifti_grid``). ``LasView`` gives any box of that
array, and the voxel sizes its NIfTI header would state, from a volume stored in any
order; only the box asked for is read or resampled. An unresampled box comes back as
it lies in memory (the volume's own axis order and directions, described by
``memory_axes`` and ``flips``), so no transposed copy of a large volume is ever made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domain.errors import UnsupportedSeriesError
from domain.imaging import CTVolume
from inference.gantry_tilt import (
    OrthogonalGrid,
    dicom2nifti_grid,
    gantry_tilt_deg,
    is_sheared,
    resample_box,
)

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def patient_axes(affine_lps: np.ndarray) -> tuple[int, int, int]:
    """The array axes that run mostly along LPS x, y and z, in any storage order.

    Refuses a grid two of whose axes run mostly the same way (an oblique reformat), and a
    sheared grid whose slice axis (0) is not the head-foot one: dicom2nifti's tilt
    correction, which the authors' input went through, is defined for axial series.
    """
    dominant = [int(np.argmax(np.abs(affine_lps[:3, a]))) for a in range(3)]
    if sorted(dominant) != [0, 1, 2]:
        raise UnsupportedSeriesError("the volume's axes do not run along left-right, front-back "
                                     "and head-foot (oblique reformat)")
    by_lps = (dominant.index(0), dominant.index(1), dominant.index(2))
    if by_lps[2] != 0 and gantry_tilt_deg(affine_lps) > 0.1:
        raise UnsupportedSeriesError("sheared grid of a non-axial series: its tilt cannot be corrected")
    return by_lps


@dataclass(frozen=True)
class LasView:
    """How to read boxes of the LAS array of one volume.

    ``axes[i]`` is the volume's array axis behind LAS axis i and ``flips[i]`` whether it
    runs the other way; ``grid`` is set when the volume is resampled (tilt), and its
    boxes come in LAS order.
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    source_affine: np.ndarray
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    grid: OrthogonalGrid | None

    @classmethod
    def of(cls, volume: CTVolume) -> LasView:
        """The LAS view of ``volume``; resampled like dicom2nifti when its grid is sheared."""
        affine = volume.affine_lps
        axes = patient_axes(affine)
        # What a NIfTI header would say: float32 column lengths of the affine.
        header = tuple(float(np.float32(np.linalg.norm(affine[:3, a]))) for a in axes)
        if is_sheared(affine, volume.hu.shape[0]):
            grid = dicom2nifti_grid(affine, volume.hu.shape,  # type: ignore[arg-type]
                                    axes[0], axes[1])
            return cls(grid.shape, header, affine, axes,  # type: ignore[arg-type]
                       (False, False, False), grid)
        # LPS +x is the patient's left, -y anterior, +z superior.
        flips = (affine[0, axes[0]] < 0, affine[1, axes[1]] > 0, affine[2, axes[2]] < 0)
        shape = tuple(volume.hu.shape[a] for a in axes)
        return cls(shape, header, affine, axes, flips, None)  # type: ignore[arg-type]

    @property
    def resampled(self) -> bool:
        return self.grid is not None

    @property
    def memory_axes(self) -> tuple[int, int, int]:
        """The axis of a sampled box that holds each LAS axis."""
        return (0, 1, 2) if self.grid is not None else self.axes

    def memory_start(self, las_axis: int, box: Box) -> int:
        """Where a sampled box starts on the full axis behind ``las_axis``, counted the
        way the memory runs (from the far end of a flipped axis)."""
        start, stop = box[las_axis]
        return self.shape[las_axis] - stop if self.flips[las_axis] else start

    def sample(self, array: np.ndarray, box: Box, cval: float) -> np.ndarray:
        """The LAS box ``box`` of ``array`` (on the volume's grid), in memory layout:
        a view of ``array`` when unresampled, else a float32 LAS array."""
        if self.grid is not None:
            return resample_box(array, self.source_affine, self.grid, box, cval)
        index = [slice(None)] * 3
        for las_axis in range(3):
            start = self.memory_start(las_axis, box)
            index[self.axes[las_axis]] = slice(start, start + box[las_axis][1] - box[las_axis][0])
        return array[tuple(index)]

    def box_of(self, mask: np.ndarray) -> Box | None:
        """The LAS box holding every true voxel of ``mask``; None when it has none."""
        ranges = []
        for axis in range(3):
            hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
            if hit.size == 0:
                return None
            ranges.append((int(hit[0]), int(hit[-1]) + 1))
        if self.grid is not None:
            return self._grid_box(ranges)
        out = []
        for las_axis in range(3):
            start, stop = ranges[self.axes[las_axis]]
            n = self.shape[las_axis]
            out.append((n - stop, n - start) if self.flips[las_axis] else (start, stop))
        return tuple(out)  # type: ignore[return-value]

    def _grid_box(self, ranges: list[tuple[int, int]]) -> Box:
        """The grid voxels a trilinear sample of the source box ``ranges`` can reach."""
        assert self.grid is not None
        # A grid sample uses the source voxels within one voxel of it (trilinear): the box
        # grown by one source voxel, mapped onto the grid, holds every sample it touches.
        ends = [(start - 1, stop) for start, stop in ranges]
        corners = np.array([[a, b, c, 1.0] for a in ends[0] for b in ends[1] for c in ends[2]])
        to_grid = np.linalg.inv(self.grid.affine_lps) @ self.source_affine
        reach = (to_grid @ corners.T).T[:, :3]
        low = np.clip(np.floor(reach.min(axis=0)).astype(int) - 1, 0, np.array(self.shape))
        high = np.clip(np.ceil(reach.max(axis=0)).astype(int) + 2, 0, np.array(self.shape))
        return tuple((int(a), int(b)) for a, b in zip(low, high))  # type: ignore[return-value]
