"""A CT made ready for the network: oriented, boxed, tiled, resampled to 1 mm and windowed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domain.imaging import CTVolume
from inference.masking.blast_ct.grid import (
    Orientation,
    grid_1mm_shape,
    labels_to_ct,
    orientation_of,
    resample_to_1mm,
    window,
)
from inference.masking.blast_ct.intracranial_box import intracranial_box
from inference.masking.blast_ct.network import CONTEXT
from inference.masking.blast_ct.tiling import TilePlan, plan_tiles

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class PreparedCt:
    """The network's input for one CT and what is needed to bring labels back.

    ``image`` covers the plan's region plus CONTEXT voxels on every side, on the 1 mm
    grid, windowed to -1..1; ``box`` is the part of the grid that was asked for.
    """

    orientation: Orientation
    ct_shape: Triple          # in network axis order
    box: tuple[Triple, Triple]
    plan: TilePlan
    image: np.ndarray

    def labels_on_ct(self, labels: np.ndarray) -> np.ndarray:
        """1 mm labels of the plan's region -> labels on the CT grid in the CT's own axis order."""
        on_grid = labels_to_ct(labels, self.plan.start, self.ct_shape, self.orientation.spacing_mm)
        return np.ascontiguousarray(self.orientation.to_ct(on_grid))


def prepare(volume: CTVolume, *, restrict_to_intracranial_box: bool, box_margin_mm: float,
            max_tile_voxels: int, box: tuple[Triple, Triple] | None = None) -> PreparedCt:
    """Orientation, box, tiles and the 1 mm windowed image of ``volume``.

    ``box`` ([start, stop) on the 1 mm grid, network order) overrides the intracranial
    box when given; the labels inside it do not depend on it.
    """
    orientation = orientation_of(volume)
    hu = orientation.to_network(volume.hu)
    ct_shape: Triple = hu.shape  # type: ignore[assignment]
    if box is None and restrict_to_intracranial_box:
        box = intracranial_box(hu, orientation.spacing_mm, box_margin_mm)
    elif box is None:
        box = ((0, 0, 0), grid_1mm_shape(ct_shape, orientation.spacing_mm))
    plan = plan_tiles(*box, max_tile_voxels)
    first: Triple = tuple(a - CONTEXT for a in plan.start)  # type: ignore[assignment]
    last: Triple = tuple(b + CONTEXT for b in plan.stop)  # type: ignore[assignment]
    image = window(resample_to_1mm(hu, orientation.spacing_mm, first, last))
    return PreparedCt(orientation, ct_shape, box, plan, image)
