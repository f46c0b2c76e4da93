"""From the CT's voxel grid to BLAST-CT's 1 mm grid and back, as blast-ct 2.1.0 does it.

blast-ct reads a NIfTI with SimpleITK, reorients it so that the array axes run
superior, posterior and left (``reorient_image``), resamples it linearly to 1 mm from
the same first voxel centre (``rescale``: (n - 1) x spacing + 1 samples, rounded; points
more than half a voxel past the last one take the image's minimum), and writes its
labels back onto the CT grid by nearest neighbour. Here the same steps work on a
``CTVolume`` and only on the box that is analysed.

Where blast-ct is not followed: its reorientation of an axis that runs backwards shifts
that axis by one voxel (its new origin lies one voxel past the far end); here it is a
plain flip. Head CT series run forward along every axis in practice, so nothing differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domain.imaging import CTVolume

Triple = tuple[int, int, int]
LOWER_HU, UPPER_HU = -15.0, 100.0


@dataclass(frozen=True)
class Orientation:
    """Which CT array axis feeds each network axis (superior, posterior, left), and flips."""

    order: Triple
    flipped: tuple[bool, bool, bool]
    spacing_mm: tuple[float, float, float]

    def to_network(self, array: np.ndarray) -> np.ndarray:
        """A view of a CT-grid array in network axis order."""
        view = np.transpose(array, self.order)
        return view[tuple(slice(None, None, -1 if f else 1) for f in self.flipped)]

    def to_ct(self, array: np.ndarray) -> np.ndarray:
        """Inverse of ``to_network``."""
        view = array[tuple(slice(None, None, -1 if f else 1) for f in self.flipped)]
        return np.transpose(view, np.argsort(self.order))


def orientation_of(volume: CTVolume) -> Orientation:
    """The axis order and flips that bring ``volume`` to BLAST-CT's orientation.

    Each CT axis goes to the patient axis (LPS) it runs most along; ValueError when two
    CT axes run mostly along the same patient axis (a degenerate affine).
    """
    directions = volume.affine_lps[:3, :3]
    patient_axis = np.argmax(np.abs(directions), axis=0)  # for each CT array axis
    if sorted(patient_axis.tolist()) != [0, 1, 2]:
        raise ValueError("the CT's axes do not map one-to-one onto the patient axes")
    # Network axes in order: superior (LPS z), posterior (y), left (x).
    order = tuple(int(np.flatnonzero(patient_axis == lps)[0]) for lps in (2, 1, 0))
    flipped = tuple(bool(directions[lps, axis] < 0) for lps, axis in zip((2, 1, 0), order))
    spacing = tuple(float(volume.spacing_mm[axis]) for axis in order)
    return Orientation(order, flipped, spacing)  # type: ignore[arg-type]


def grid_1mm_shape(shape: Triple, spacing_mm: tuple[float, float, float]) -> Triple:
    """Samples per axis on the 1 mm grid (blast-ct's get_size_from_spacing)."""
    return tuple(round((n - 1) * s / 1.0 + 1) for n, s in zip(shape, spacing_mm))  # type: ignore[return-value]


def resample_to_1mm(array: np.ndarray, spacing_mm: tuple[float, float, float],
                    start: Triple, stop: Triple) -> np.ndarray:
    """Linear resampling of ``array`` (network order) onto 1 mm grid voxels [start, stop).

    Voxels outside the 1 mm grid repeat its edge (blast-ct pads its patches that way);
    grid points past the image by more than half a voxel take the image's minimum
    (SimpleITK's default value in blast-ct's ``rescale``). float32 throughout.
    """
    grid = grid_1mm_shape(array.shape, spacing_mm)  # type: ignore[arg-type]
    default = float(array.min())
    out = array
    for axis, (n, s, a, b, m) in enumerate(zip(array.shape, spacing_mm, start, stop, grid)):
        k = np.clip(np.arange(a, b), 0, m - 1)
        position = k / s  # continuous index into the CT axis
        below = np.minimum(np.floor(position).astype(np.int64), n - 1)
        above = np.minimum(below + 1, n - 1)
        weight = (position - below).astype(np.float32)
        # Read only the CT samples the box needs before interpolating (memory).
        first, last = int(below.min()), int(above.max()) + 1
        part = np.take(out, np.arange(first, last), axis=axis)
        lower = np.take(part, below - first, axis=axis)
        upper = np.take(part, above - first, axis=axis)
        shape = [1, 1, 1]
        shape[axis] = -1
        w = weight.reshape(shape)
        out = (lower + (upper - lower) * w).astype(np.float32, copy=False)
        outside = position >= n - 0.5
        if outside.any():
            index = [slice(None)] * 3
            index[axis] = outside  # type: ignore[call-overload]
            out[tuple(index)] = default
    return np.ascontiguousarray(out, dtype=np.float32)


def window(hu: np.ndarray) -> np.ndarray:
    """Clip to -15..100 HU and scale to -1..1, as blast-ct's IntensityWindowNormalization
    (same expression, so the same float32 rounding)."""
    clipped = np.clip(hu, LOWER_HU, UPPER_HU)
    return (2.0 * clipped - LOWER_HU - UPPER_HU) / (UPPER_HU - LOWER_HU)


def labels_to_ct(labels: np.ndarray, start: Triple, ct_shape: Triple,
                 spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Nearest-neighbour labels on the CT grid (network order) from 1 mm labels whose
    first voxel is 1 mm grid voxel ``start``; CT voxels outside them get 0.

    SimpleITK's nearest neighbour rounds half up; points beyond the 1 mm grid by half a
    voxel or more take 0, as in blast-ct's ``save_image``.
    """
    grid = grid_1mm_shape(ct_shape, spacing_mm)
    picks = []
    for n, s, a, size, m in zip(ct_shape, spacing_mm, start, labels.shape, grid):
        position = np.arange(n) * s
        nearest = np.floor(position + 0.5).astype(np.int64)
        inside = (position < m - 0.5) & (nearest >= a) & (nearest < a + size)
        picks.append((np.flatnonzero(inside), nearest[inside] - a))
    out = np.zeros(ct_shape, np.uint8)
    ct_index = np.ix_(*(p[0] for p in picks))
    out[ct_index] = labels[np.ix_(*(p[1] for p in picks))]
    return out
