"""The seam every hematoma masking method implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inference.ct_volume import CTVolume


@dataclass(frozen=True)
class HematomaMask:
    """Intraparenchymal hematoma mask on the voxel grid of a CTVolume, and the other
    kinds of blood when the method tells them apart.

    ``mask`` is a boolean array of the volume's shape: the intraparenchymal hematoma, the
    only blood counted in the hematoma volume. ``intraventricular``, ``extra_axial``
    (subdural, epidural, subarachnoid) and ``perilesional_oedema`` are optional boolean
    masks of the same shape, None when the method cannot separate that class (an
    all-False mask means it looked and found none). ``learned`` is False only for
    methods with no trained weights (the SEG then names the algorithm family
    "Morphological Operations" rather than "Artificial Intelligence"). ``notes`` are
    what a report must say about the method (model origin, validation, domain).
    """

    mask: np.ndarray
    method_name: str
    method_version: str
    intraventricular: np.ndarray | None = None
    learned: bool = True
    extra_axial: np.ndarray | None = None
    perilesional_oedema: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mask.dtype != np.bool_:
            raise ValueError("a hematoma mask is boolean")
        for name in ("intraventricular", "extra_axial", "perilesional_oedema"):
            other = getattr(self, name)
            if other is not None and (other.dtype != np.bool_ or other.shape != self.mask.shape):
                raise ValueError(f"the {name} mask must be boolean and of the hematoma mask's shape")


class HematomaMasker(Protocol):
    """A masking method: loaded once, then called for each volume."""

    name: str
    version: str

    def segment(self, volume: CTVolume) -> HematomaMask:
        """Return the intraparenchymal hematoma mask of ``volume``."""
        ...
