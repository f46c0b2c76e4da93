"""Accuracy and speed of both masking methods on phantoms with known answers.

Methods: hemex-threshold (training-free) and blast-ct (BLAST-CT v1 ensemble, CPU
default members). Cases, all synthetic HU (no patient data):

- heads of nested ellipsoids (tests/support/phantoms.py) with an ellipsoidal hematoma in
  several places and slice thicknesses;
- a thalamic hematoma beside intraventricular blood filling the left lateral ventricle,
  and a lobar hematoma touching a subdural crescent over the same convexity;
- the real lesion geometry of BLAST-CT scan_0 (../shared/data/blast_ct_v1, Apache-2.0;
  its CT is not public, so the HU are synthetic) drawn twice: intraparenchymal label
  only, then with its extra-axial and intraventricular labels drawn as blood too.

BLAST-CT was trained on real CT of traumatic brain injury; how it does on these
phantoms is measured and reported as it is, and the phantoms are not tuned to it.
Prints, per case and method: truth and measured intraparenchymal volume (planimetry,
ABC/2), relative error, Dice, the intraventricular and extra-axial volumes (truth /
measured; "-" where the method cannot separate them) and the time, also as a ratio to
copying the same volume (a memory-bound reference measured in the same run).

Usage: .venv/bin/python -m bench.bench_masking [--methods threshold blast-ct]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import edt
import nibabel as nib
import numpy as np

from domain.imaging import CTVolume
from inference.masking.base import HematomaMasker
from inference.masking.blast_ct.masker import BlastCtMasker
from inference.masking.threshold import ThresholdMasker
from inference.measurements import measure_hematoma
from inference.parameters import BlastCtParameters, ThresholdParameters
from tests.support.phantoms import (
    HEAD_RADII_MM,
    SCALP_MM,
    SKULL_MM,
    VENTRICLE_CENTRES_MM,
    VENTRICLE_RADII_MM,
    ellipsoid,
    head_hu,
    head_hu_with_lesions,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "blast_ct_v1" / "scans" / "scan_0"
ELLIPSOIDS = [  # (label, radii mm, centre mm, slice mm, noise HU)
    ("basal ganglia 27 mL, 5 mm", (22.0, 18.0, 16.0), (28.0, 0.0, 0.0), 5.0, 4.0),
    ("basal ganglia 27 mL, 0.625 mm", (22.0, 18.0, 16.0), (28.0, 0.0, 0.0), 0.625, 9.0),
    ("large 79 mL, 5 mm", (30.0, 25.0, 25.0), (15.0, 5.0, 0.0), 5.0, 4.0),
    ("small 4 mL, 2.5 mm", (10.0, 10.0, 10.0), (20.0, -30.0, 10.0), 2.5, 4.0),
    ("lobar against cortex 9 mL, 5 mm", (15.0, 12.0, 12.0), (-40.0, 40.0, 0.0), 5.0, 4.0),
    ("tiny 0.5 mL, 2.5 mm", (5.0, 5.0, 5.0), (-20.0, 10.0, -10.0), 2.5, 4.0),
]
IPH, EAH, OEDEMA, IVH = 1, 2, 3, 4


@dataclass(frozen=True)
class Case:
    label: str
    volume: CTVolume
    labels: np.ndarray        # truth: 1 IPH, 2 EAH, 3 oedema, 4 IVH
    iph_ml: float             # truth volume (analytic for ellipsoids, else voxel count)


def _volume(hu: np.ndarray, spacing: tuple[float, float, float]) -> CTVolume:
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])[[2, 1, 0, 3]]
    return CTVolume(np.rint(hu).astype(np.float32), affine, spacing, tuple(str(i) for i in range(hu.shape[0])),
                    "1", "1")


def _iph_beside_ivh(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Thalamic hematoma (8.4 mL ellipsoid, minus what lies in the ventricle) whose blood
    fills the left lateral ventricle next to it (4.5 mL)."""
    labels = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.uint8)
    labels[ellipsoid(x, y, z, (22.0, 0.0, 0.0), (15.0, 17.0, 15.0))] = OEDEMA
    labels[ellipsoid(x, y, z, (22.0, 0.0, 0.0), (12.0, 14.0, 12.0))] = IPH
    labels[ellipsoid(x, y, z, VENTRICLE_CENTRES_MM[1], VENTRICLE_RADII_MM)] = IVH
    return labels


def _iph_touching_eah(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Lobar hematoma (7.2 mL) reaching a 6 mm subdural crescent over the left convexity."""
    labels = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.uint8)
    inner = tuple(r - SCALP_MM - SKULL_MM for r in HEAD_RADII_MM)
    deeper = tuple(r - 6.0 for r in inner)
    crescent = (ellipsoid(x, y, z, (0.0, 0.0, 0.0), inner) & ~ellipsoid(x, y, z, (0.0, 0.0, 0.0), deeper)  # type: ignore[arg-type]
                & (x > 30.0) & (np.abs(z) < 25.0) & (y > -20.0) & (y < 35.0))
    labels[ellipsoid(x, y, z, (42.0, 10.0, 0.0), (15.0, 15.0, 15.0))] = OEDEMA
    labels[ellipsoid(x, y, z, (42.0, 10.0, 0.0), (12.0, 12.0, 12.0))] = IPH
    labels[crescent] = EAH
    return labels


def _mixed_case(label: str, lesions: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                slice_mm: float) -> Case:
    hu, labels = head_hu_with_lesions(round(120 / slice_mm), 512, 0.45, slice_mm, lesions, 4.0, seed=3)
    volume = _volume(hu, (slice_mm, 0.45, 0.45))
    return Case(label, volume, labels, float((labels == IPH).sum()) * volume.voxel_volume_ml)


def _real_lesion(label: str, blood_labels: tuple[int, ...]) -> Case:
    labels = np.asarray(nib.load(SHARED / "scan_0_segmentation.nii.gz").dataobj).transpose(2, 1, 0)
    region = np.asarray(nib.load(SHARED / "scan_0_sampling_mask.nii.gz").dataobj).transpose(2, 1, 0) > 0
    depth = edt.edt(region)
    hu = np.full(labels.shape, -1000.0, np.float32)
    hu[depth > 0], hu[depth > 3], hu[depth > 9], hu[depth > 10.5] = 40.0, 1000.0, 6.0, 35.0
    hu[labels == OEDEMA] = 20.0
    hu[np.isin(labels, blood_labels)] = 65.0
    hu += np.random.default_rng(1).normal(0, 4, hu.shape).astype(np.float32)
    # Labels not drawn as blood are not there to find.
    truth = np.where(np.isin(labels, (*blood_labels, OEDEMA)), labels, 0).astype(np.uint8)
    return Case(label, _volume(hu, (1.0, 1.0, 1.0)), truth, float((labels == IPH).sum()) / 1000)


def cases() -> Iterator[Case]:
    """One case at a time (the thin-slice ones take a few hundred MB)."""
    for label, radii, centre, slice_mm, noise in ELLIPSOIDS:
        hu, truth = head_hu(round(120 / slice_mm), 512, 0.45, slice_mm, radii, centre, None, noise, seed=3)
        yield Case(label, _volume(hu, (slice_mm, 0.45, 0.45)), truth.astype(np.uint8),
                   4 / 3 * np.pi * float(np.prod(radii)) / 1000)
    yield _mixed_case("thalamic IPH beside IVH, 5 mm", _iph_beside_ivh, 5.0)
    yield _mixed_case("lobar IPH touching subdural blood, 5 mm", _iph_touching_eah, 5.0)
    if SHARED.is_dir():
        yield _real_lesion("BLAST-CT scan_0 IPH only, 1 mm", (IPH,))
        yield _real_lesion("BLAST-CT scan_0 IPH + EAH + IVH as blood, 1 mm", (IPH, EAH, IVH))
    else:
        print(f"(real lesion cases skipped: {SHARED} not found)")


def _class_ml(mask: np.ndarray | None, ml: float) -> str:
    return "-" if mask is None else f"{mask.sum() * ml:.2f}"


def row(case: Case, method: str, masker: HematomaMasker) -> None:
    volume = case.volume
    start = time.perf_counter()
    reference = volume.hu.astype(np.float32, copy=True)
    reference_s = time.perf_counter() - start
    del reference
    start = time.perf_counter()
    mask = masker.segment(volume)
    mask_s = time.perf_counter() - start
    measured = measure_hematoma(volume, mask)
    truth = case.labels == IPH
    dice = 2 * np.sum(mask.mask & truth) / max(1, mask.mask.sum() + truth.sum())
    error = (measured.volume_ml - case.iph_ml) / case.iph_ml * 100
    ml = volume.voxel_volume_ml
    ivh = f"{(case.labels == IVH).sum() * ml:.2f}/{_class_ml(mask.intraventricular, ml)}"
    eah = f"{(case.labels == EAH).sum() * ml:.2f}/{_class_ml(mask.extra_axial, ml)}"
    print(f"{case.label:47s} {method:9s} {case.iph_ml:7.2f} {measured.volume_ml:8.2f} {error:+7.1f}%"
          f" {measured.abc2_ml:7.2f} {dice:6.3f} {ivh:>11s} {eah:>12s} {mask_s:7.1f} {mask_s / reference_s:8.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=("threshold", "blast-ct"),
                        default=["threshold", "blast-ct"])
    args = parser.parse_args(argv)
    maskers: dict[str, HematomaMasker] = {}
    if "threshold" in args.methods:
        maskers["threshold"] = ThresholdMasker(ThresholdParameters())
    if "blast-ct" in args.methods:
        maskers["blast-ct"] = BlastCtMasker(BlastCtParameters(device="cpu"))
        print(f"blast-ct: {maskers['blast-ct'].version}")
    print(f"{'case':47s} {'method':9s} {'truth':>7s} {'measured':>8s} {'error':>8s} {'ABC/2':>7s}"
          f" {'Dice':>6s} {'IVH t/m mL':>11s} {'EAH t/m mL':>12s} {'mask s':>7s} {'x copy':>8s}")
    for case in cases():
        for method, masker in maskers.items():
            row(case, method, masker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
