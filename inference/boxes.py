"""Bounding boxes of boolean arrays, as tuples of slices (one per axis)."""

from __future__ import annotations

import numpy as np

Box = tuple[slice, ...]


def bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every voxel of ``mask``; None when it is empty."""
    spans = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
             for axis in range(mask.ndim)]
    if any(span.size == 0 for span in spans):
        return None
    return tuple(slice(int(span[0]), int(span[-1]) + 1) for span in spans)


def widened(box: Box, voxels: int, shape: tuple[int, ...]) -> Box:
    """``box`` grown by ``voxels`` on every side, within an array of ``shape``."""
    return tuple(slice(max(0, b.start - voxels), min(n, b.stop + voxels)) for b, n in zip(box, shape, strict=True))
