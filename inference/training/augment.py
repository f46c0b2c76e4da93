"""The authors' augmentation (notebooks CNN_Model_2 and Multimodal_Model_2).

Only the expansion cases of the training split are augmented: each is added once more
rotated in-plane by 30 degrees (``ndimage.rotate(image, 30, reshape=False)``: cubic
spline, clipped to [0, 1]), then every expansion image, rotated or not, once more
flipped left-right. So each expansion case is seen four times an epoch (as is, rotated,
flipped, rotated and flipped) and every other case once; that is all their
oversampling. Validation cases are never augmented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PUBLISHED_ROTATION_DEG = 30.0


@dataclass(frozen=True)
class Variant:
    """One training sample of an epoch: which case, rotated and/or flipped."""

    index: int
    rotated: bool = False
    flipped: bool = False


def epoch_variants(labels: np.ndarray) -> list[Variant]:
    """Every case as is; expansion cases (label 1) also rotated, flipped, and both."""
    variants = [Variant(int(i)) for i in range(len(labels))]
    for i in np.flatnonzero(np.asarray(labels) == 1):
        variants += [Variant(int(i), rotated=True), Variant(int(i), flipped=True),
                     Variant(int(i), rotated=True, flipped=True)]
    return variants


def rotated_image(image: np.ndarray, angle_deg: float = PUBLISHED_ROTATION_DEG) -> np.ndarray:
    """``image`` (H, W, slices, 1) rotated in-plane as the authors rotate it, clipped."""
    out = ndimage.rotate(image[..., 0], angle_deg, reshape=False)
    return np.clip(out, 0.0, 1.0)[..., np.newaxis].astype(np.float32)


def flipped_image(image: np.ndarray) -> np.ndarray:
    """Left-right flip: the authors flip axis 2 of their (case, H, W, slices) stack."""
    return np.ascontiguousarray(image[:, ::-1])
