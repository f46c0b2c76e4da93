"""The seam every hematoma masking method implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inference.ct_volume import CTVolume


@dataclass(frozen=True)
class HematomaMask:
    """Intraparenchymal hematoma mask on the voxel grid of a CTVolume.

    ``mask`` is a boolean array of the volume's shape. ``intraventricular`` is an
    optional boolean mask of intraventricular blood (not counted in the hematoma volume)
    when the method can separate it; None when it cannot. ``learned`` is False only for
    methods with no trained weights (the SEG then names the algorithm family
    "Morphological Operations" rather than "Artificial Intelligence").
    """

    mask: np.ndarray
    method_name: str
    method_version: str
    intraventricular: np.ndarray | None = None
    learned: bool = True

    def __post_init__(self) -> None:
        if self.mask.dtype != np.bool_:
            raise ValueError("a hematoma mask is boolean")


class HematomaMasker(Protocol):
    """A masking method: loaded once, then called for each volume."""

    name: str
    version: str

    def segment(self, volume: CTVolume) -> HematomaMask:
        """Return the intraparenchymal hematoma mask of ``volume``."""
        ...
