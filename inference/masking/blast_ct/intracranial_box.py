"""The box of the 1 mm grid worth running the network on: the intracranial space and a margin.

Blood that BLAST-CT labels lies inside the skull, and most of a head CT series is not
(air, scalp, face, neck). On a grid of about 2 mm: soft tissue (-15..100 HU) away
from bone (> 250 HU), eroded by 4 mm so that thin bridges (scalp, the neck through the
foramen magnum) fall away; the large pieces that remain (the largest, and any of at
least a fifth of its size, so that a brain split by a dense falx or tentorium is not
cut in half) give the box, grown back by the erosion, one coarse voxel and
``margin_mm``. When nothing is found the
whole grid is analysed. The network's output inside the box does not depend on the box:
it reads its 40 mm of context from the whole volume.
"""

from __future__ import annotations

import edt
import numpy as np
from scipy import ndimage

from inference.masking.blast_ct.grid import LOWER_HU, UPPER_HU, grid_1mm_shape

Triple = tuple[int, int, int]
BONE_HU = 250.0
EROSION_MM = 4.0
COARSE_MM = 2.0
KEEP_FRACTION = 0.2


def intracranial_box(hu: np.ndarray, spacing_mm: tuple[float, float, float],
                     margin_mm: float) -> tuple[Triple, Triple]:
    """(start, stop) on the 1 mm grid of ``hu`` (network order), covering its intracranial space."""
    grid = grid_1mm_shape(hu.shape, spacing_mm)  # type: ignore[arg-type]
    steps = tuple(max(1, round(COARSE_MM / s)) for s in spacing_mm)
    coarse = hu[tuple(slice(None, None, step) for step in steps)]
    coarse_mm = tuple(s * step for s, step in zip(spacing_mm, steps))
    # Grown in-plane only: the partial volume of the inner table lies beside it in a
    # slice, and a thick slice grown along z would lose the vertex and the skull base.
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    bone = ndimage.binary_dilation(coarse > BONE_HU, structure=in_plane)
    soft = (coarse >= LOWER_HU) & (coarse <= UPPER_HU) & ~bone
    core = edt.edt(soft, anisotropy=coarse_mm, black_border=False, parallel=1) > EROSION_MM
    labels, count = ndimage.label(core)
    if count == 0:
        return (0, 0, 0), grid
    sizes = np.bincount(labels.ravel())[1:]
    kept = np.flatnonzero(sizes >= KEEP_FRACTION * sizes.max()) + 1
    boxes = [b for label, b in enumerate(ndimage.find_objects(labels), start=1) if label in kept and b]
    start = [min(b[axis].start for b in boxes) for axis in range(3)]
    stop = [max(b[axis].stop for b in boxes) for axis in range(3)]
    # Coarse indices -> mm from the first voxel -> 1 mm grid indices, grown by the margin,
    # the erosion (taken off every side) and one coarse voxel (the sampling and the bone
    # grown in-plane).
    first = tuple(max(0, int(np.floor(a * c - margin_mm - EROSION_MM - c)))
                  for a, c in zip(start, coarse_mm))
    last = tuple(min(m, int(np.ceil((b - 1) * c + margin_mm + EROSION_MM + c)) + 1)
                 for b, c, m in zip(stop, coarse_mm, grid))
    return first, last  # type: ignore[return-value]
