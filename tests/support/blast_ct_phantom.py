"""A synthetic head CT drawn around the one real lesion label map BLAST-CT ships (scan_0).

../shared/data/blast_ct_v1/scans/scan_0 holds a real label map (1 intraparenchymal,
2 extra-axial, 3 perilesional oedema, 4 intraventricular hemorrhage; 201 x 201 x 149 at
1 mm) and its brain sampling mask, but not its CT. The HU here are synthetic: layers
by depth inside the sampling mask (scalp, skull, CSF, brain) and a plausible value per
lesion class, plus noise from a counter-based hash (the same numbers on every platform
and numpy version, unlike a random generator's stream), rounded to whole HU.

Used by the BLAST-CT parity tests, by their reference script (which runs under a
separate torch venv: numpy, scipy and nibabel only here) and by the benches.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

SCAN_0 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "blast_ct_v1" / "scans" / "scan_0"
HU_AIR, HU_SCALP, HU_BONE, HU_CSF, HU_BRAIN = -1000.0, 40.0, 1000.0, 6.0, 35.0
# Acute intraparenchymal clot, subdural/epidural blood, oedema, blood mixed with CSF.
LESION_HU = {1: 65.0, 2: 60.0, 3: 20.0, 4: 50.0}
NOISE_HU = 4.0
# (z, y, x) box of scan_0 with all four classes (IPH 40 mL, EAH 5 mL, oedema 55 mL, IVH 0.6 mL).
LESION_BOX = (slice(64, 112), slice(50, 146), slice(30, 126))
# A smaller box, still with every class, for the ensemble's check (three times the work).
SMALL_LESION_BOX = (slice(76, 106), slice(84, 144), slice(36, 96))


def scan0_labels(folder: Path = SCAN_0) -> tuple[np.ndarray, np.ndarray]:
    """(labels uint8, brain sampling mask bool), both (z, y, x) on the 1 mm grid, z ascending."""
    # The NIfTI affine is diag(-1, -1, 1) (RAS): voxel axes run left, posterior, superior,
    # which is the (x, y, z) of DICOM's LPS; transposed to the (slice, row, column) order.
    labels = np.asarray(nib.load(folder / "scan_0_segmentation.nii.gz").dataobj).transpose(2, 1, 0)
    mask = np.asarray(nib.load(folder / "scan_0_sampling_mask.nii.gz").dataobj).transpose(2, 1, 0)
    return np.ascontiguousarray(labels, dtype=np.uint8), np.ascontiguousarray(mask > 0)


def hashed_noise(shape: tuple[int, ...], seed: int, sd: float) -> np.ndarray:
    """Approximately Gaussian noise (sum of four uniforms) from a splitmix64 hash of the index."""
    index = np.arange(int(np.prod(shape)), dtype=np.uint64)
    total = np.zeros(index.shape, np.float64)
    with np.errstate(over="ignore"):
        for draw in range(4):
            z = index * np.uint64(4) + np.uint64(draw) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            total += (z >> np.uint64(11)).astype(np.float64) / 2.0 ** 53
    # Four uniforms have variance 4/12; centre and scale to sd.
    return ((total - 2.0) * np.sqrt(3.0) * sd).reshape(shape)


def scan0_head_hu(labels: np.ndarray, brain: np.ndarray, noise_hu: float = NOISE_HU,
                  seed: int = 1) -> np.ndarray:
    """Whole-HU float32 head (z, y, x) at 1 mm: the sampling mask's outer 3 mm scalp, then
    6 mm skull, 1.5 mm CSF and brain; each lesion class at its LESION_HU; plus noise."""
    depth = ndimage.distance_transform_edt(brain)
    hu = np.full(labels.shape, HU_AIR)
    hu[depth > 0], hu[depth > 3], hu[depth > 9], hu[depth > 10.5] = HU_SCALP, HU_BONE, HU_CSF, HU_BRAIN
    for label, value in LESION_HU.items():
        hu[labels == label] = value
    if noise_hu > 0:
        hu += hashed_noise(hu.shape, seed, noise_hu)
    return np.rint(hu).astype(np.float32)


def resample_nearest(hu_1mm: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """The 1 mm phantom seen on a coarser or finer CT grid (nearest 1 mm voxel per CT voxel),
    covering the same extent from the same first voxel."""
    axes = [np.floor(np.arange(int((n - 1) // s) + 1) * s + 0.5).astype(int).clip(0, n - 1)
            for n, s in zip(hu_1mm.shape, spacing_mm)]
    return np.ascontiguousarray(hu_1mm[np.ix_(*axes)])


def digest(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes and shape, to tell a fixture's input was rebuilt unchanged."""
    h = hashlib.sha256(str((array.shape, array.dtype.str)).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def require_shared(path: Path) -> None:
    """Skip when ../shared is missing on a developer's machine; fail in CI (CI set), where
    the shared data must be present and a skipped parity test would hide a regression."""
    if path.exists():
        return
    import pytest  # here: make_reference.py imports this module in a venv without pytest

    message = f"shared data not found at {path}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
