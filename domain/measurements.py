"""What is measured on a hematoma mask, as the report and alert read it."""

from __future__ import annotations

from dataclasses import dataclass

# Intraventricular blood counts as present (the SR's "Intraventricular extension", the
# BRAIN score's IVH item, "new IVH" at follow-up) from this volume on: a learned masker
# labels a few stray voxels as IVH where there is none (bench/bench_masking.py: 0.02-0.08
# mL on phantoms without IVH), and two stray voxels must not add 2 BRAIN points. Its
# measured volume is reported whatever it is.
IVH_PRESENT_MIN_ML = 0.1


def ivh_present(ivh_ml: float | None) -> bool | None:
    """Whether intraventricular blood of ``ivh_ml`` counts as present; None when the
    masking method does not measure it."""
    return None if ivh_ml is None else ivh_ml >= IVH_PRESENT_MIN_ML


@dataclass(frozen=True)
class HematomaMeasurements:
    """What is measured on one intraparenchymal hematoma mask.

    ``volume_ml`` is planimetry (voxel count x voxel volume), the reference value;
    ``abc2_ml`` is the bedside ellipsoid estimate (A x B x C / 2) given for comparison.
    ``diameters_mm`` are A (largest axial diameter), B (perpendicular to A in the same
    slice) and C (cranio-caudal extent). The intraventricular, extra-axial and
    perilesional oedema volumes (planimetry) are None when the masking method cannot
    separate that class. ``method_notes`` are what a report must say about the masking
    method (model origin, training data, validation).
    """

    volume_ml: float
    abc2_ml: float
    diameters_mm: tuple[float, float, float]
    voxel_count: int
    intraventricular_extension: bool | None
    method_name: str
    method_version: str
    intraventricular_volume_ml: float | None = None
    extra_axial_volume_ml: float | None = None
    perilesional_oedema_volume_ml: float | None = None
    method_notes: tuple[str, ...] = ()
