"""Published augmentation: left-right flips, in-plane rotations up to +-30 degrees, and
oversampling of expansion cases (only they are repeated, as in study A)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MAX_ROTATION_DEG = 30.0


def augment_image(image: np.ndarray, rng: np.random.Generator,
                  max_rotation_deg: float = MAX_ROTATION_DEG) -> np.ndarray:
    """Random left-right flip (p = 0.5) and in-plane rotation in [-max, +max] degrees.

    ``image`` is (H, W, slices, 1) in display orientation, so axis 1 is left-right.
    Rotation is linear and keeps the shape; the hematoma image is zero outside the
    mask, so the zero fill at the corners adds nothing.
    """
    out = image
    if rng.random() < 0.5:
        out = out[:, ::-1]
    angle = float(rng.uniform(-max_rotation_deg, max_rotation_deg))
    out = ndimage.rotate(out, angle, axes=(0, 1), reshape=False, order=1, mode="constant", cval=0.0)
    return np.ascontiguousarray(out, dtype=np.float32)


def oversample_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of one epoch: every case once, expansion cases repeated to balance, shuffled.

    With n negatives and p positives (p < n), positives appear about n / p times.
    """
    labels = np.asarray(labels)
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    idx = [np.arange(len(labels))]
    if 0 < len(pos) < len(neg):
        extra = len(neg) - len(pos)
        idx.append(np.resize(rng.permutation(pos), extra))
    out = np.concatenate(idx)
    rng.shuffle(out)
    return out
