"""Statements of where an input leaves the domain Tanioka et al. published their model on."""

from __future__ import annotations

import numpy as np
import pytest

from domain.imaging import CTVolume, HematomaMask
from inference.published_domain import outside_published_domain
from inference.tanioka_preprocessing import PUBLISHED_GEOMETRY

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

MASK_STATEMENT = ("hematoma mask made automatically by hemex-threshold 1.0.0: the published "
                  "model was trained and tested on masks drawn by experts")


def volume(slices: int, matrix: int, pixel_mm: float, slice_mm: float,
           thickness_mm: float | None, kvp: float | None) -> CTVolume:
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = (0, 0, slice_mm), (0, pixel_mm, 0), (pixel_mm, 0, 0)
    return CTVolume(hu=np.zeros((slices, matrix, matrix), np.float32), affine_lps=affine,
                    spacing_mm=(slice_mm, pixel_mm, pixel_mm),
                    sop_instance_uids=tuple(str(i) for i in range(slices)),
                    series_instance_uid="1", study_instance_uid="2",
                    slice_thickness_mm=thickness_mm, kvp=kvp)


def statements(vol: CTVolume, missing: tuple[str, ...] = (), fallback: bool = False) -> tuple[str, ...]:
    mask = HematomaMask(np.zeros(vol.hu.shape, bool), "hemex-threshold", "1.0.0", learned=False)
    return outside_published_domain(vol, mask, PUBLISHED_GEOMETRY, missing, fallback)


def test_an_input_like_the_published_cohorts_only_states_its_automatic_mask() -> None:
    assert statements(volume(2, 512, 0.45, 0.625, 0.625, 120.0)) == (MASK_STATEMENT,)


def test_every_departure_is_stated() -> None:
    # 5 mm slices, 256 matrix, 100 kVp, 300 mm field, two variables missing.
    got = statements(volume(2, 256, 300 / 256, 5.0, 5.0, 100.0), ("pt_inr", "hours_onset_to_ct"), True)
    assert got == (
        ("source slices 5 mm thick: the published cohorts used slices of 2 mm or thinner "
        "(resampled to 2 mm here)"),
        "image matrix 256 x 256: the published cohorts were 512 x 512 or larger",
        "tube voltage 100 kVp: the published cohorts were scanned at 120 kVp",
        ("field of view 300 mm: wider than the 256 mm the published preprocessing keeps, so the "
        "image was cropped about its centre (the authors' code cannot process it)"),
        MASK_STATEMENT,
        ("image-only CNN Model 2 ran because clinical variables are missing (pt_inr, "
        "hours_onset_to_ct): the published best model, Multimodal CNN Model 2, uses all five"),
    )


def test_thickness_falls_back_to_the_slice_spacing_when_not_stated() -> None:
    assert statements(volume(2, 512, 0.45, 2.5, None, None))[0].startswith("source slices 2.5 mm thick")
