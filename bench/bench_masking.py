"""Accuracy and speed of the hemex-threshold masking method on phantoms with known answers.

Cases: synthetic heads (tests/support/phantoms.py) with ellipsoidal hematomas in several
places and slice thicknesses, and the real lesion geometry of BLAST-CT scan_0
(../shared/data/blast_ct_v1, Apache-2.0; its CT is not public, so the HU are synthetic)
drawn twice: intraparenchymal label only, then with its extra-axial and
intraventricular labels drawn as blood too (the method's known limit). Prints, for each
case: truth and measured volume (planimetry, ABC/2), relative error, Dice, and the
masking time as a ratio to building the same volume's float32 copy (a memory-bound
reference measured in the same run).

Usage: .venv/bin/python -m bench.bench_masking
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import edt
import nibabel as nib
import numpy as np

from domain.imaging import CTVolume
from inference.masking.threshold import ThresholdMasker
from inference.measurements import measure_hematoma
from inference.parameters import ThresholdParameters
from tests.support.phantoms import head_hu

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "blast_ct_v1" / "scans" / "scan_0"
ELLIPSOIDS = [  # (label, radii mm, centre mm, slice mm, noise HU)
    ("basal ganglia 27 mL, 5 mm", (22.0, 18.0, 16.0), (28.0, 0.0, 0.0), 5.0, 4.0),
    ("basal ganglia 27 mL, 0.625 mm", (22.0, 18.0, 16.0), (28.0, 0.0, 0.0), 0.625, 9.0),
    ("large 79 mL, 5 mm", (30.0, 25.0, 25.0), (15.0, 5.0, 0.0), 5.0, 4.0),
    ("small 4 mL, 2.5 mm", (10.0, 10.0, 10.0), (20.0, -30.0, 10.0), 2.5, 4.0),
    ("lobar against cortex 9 mL, 5 mm", (15.0, 12.0, 12.0), (-40.0, 40.0, 0.0), 5.0, 4.0),
    ("tiny 0.5 mL, 2.5 mm", (5.0, 5.0, 5.0), (-20.0, 10.0, -10.0), 2.5, 4.0),
]


def _volume(hu: np.ndarray, spacing: tuple[float, float, float]) -> CTVolume:
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])[[2, 1, 0, 3]]
    return CTVolume(np.rint(hu).astype(np.float32), affine, spacing, tuple(str(i) for i in range(hu.shape[0])),
                    "1", "1")


def _real_lesion(blood_labels: tuple[int, ...]) -> tuple[CTVolume, np.ndarray]:
    labels = np.asarray(nib.load(SHARED / "scan_0_segmentation.nii.gz").dataobj).transpose(2, 1, 0)
    region = np.asarray(nib.load(SHARED / "scan_0_sampling_mask.nii.gz").dataobj).transpose(2, 1, 0) > 0
    depth = edt.edt(region)
    hu = np.full(labels.shape, -1000.0, np.float32)
    hu[depth > 0], hu[depth > 3], hu[depth > 9], hu[depth > 10.5] = 40.0, 1000.0, 6.0, 35.0
    hu[labels == 3] = 20.0
    hu[np.isin(labels, blood_labels)] = 65.0
    hu += np.random.default_rng(1).normal(0, 4, hu.shape).astype(np.float32)
    return _volume(hu, (1.0, 1.0, 1.0)), labels == 1


def _row(label: str, volume: CTVolume, truth: np.ndarray, truth_ml: float, masker: ThresholdMasker) -> None:
    start = time.perf_counter()
    reference = volume.hu.astype(np.float32, copy=True)
    reference_s = time.perf_counter() - start
    del reference
    start = time.perf_counter()
    mask = masker.segment(volume)
    mask_s = time.perf_counter() - start
    measured = measure_hematoma(volume, mask)
    dice = 2 * np.sum(mask.mask & truth) / max(1, mask.mask.sum() + truth.sum())
    error = (measured.volume_ml - truth_ml) / truth_ml * 100
    print(f"{label:44s} {truth_ml:7.2f} {measured.volume_ml:8.2f} {error:+7.1f}% {measured.abc2_ml:7.2f}"
          f" {dice:6.3f} {mask_s:7.2f} {mask_s / reference_s:9.0f}")


def main() -> int:
    masker = ThresholdMasker(ThresholdParameters())
    print(f"{'case':44s} {'truth':>7s} {'measured':>8s} {'error':>8s} {'ABC/2':>7s} {'Dice':>6s}"
          f" {'mask s':>7s} {'x copy':>9s}")
    for label, radii, centre, slice_mm, noise in ELLIPSOIDS:
        slices = round(120 / slice_mm)
        hu, truth = head_hu(slices, 512, 0.45, slice_mm, radii, centre, None, noise, seed=3)
        truth_ml = 4 / 3 * np.pi * np.prod(radii) / 1000
        _row(label, _volume(hu, (slice_mm, 0.45, 0.45)), truth, truth_ml, masker)
    if SHARED.is_dir():
        for label, blood in (("BLAST-CT scan_0 IPH only, 1 mm", (1,)),
                             ("BLAST-CT scan_0 IPH + EAH + IVH as blood, 1 mm", (1, 2, 4))):
            volume, truth = _real_lesion(blood)
            _row(label, volume, truth, float(truth.sum()) / 1000, masker)
    else:
        print(f"(real lesion cases skipped: {SHARED} not found)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
