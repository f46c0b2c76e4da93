"""The blast-ct masking method end to end, against blast-ct's own whole-volume inference.

The CT is synthetic (tests/support/blast_ct_phantom.py: a head drawn around the real
lesion label map of ../shared/data/blast_ct_v1, sampled at 2 x 0.8 x 0.8 mm); the
reference labels were made from it by blast-ct 2.1.0's console-tool path (reorient,
resample to 1 mm, window, 30-voxel tiles, argmax, nearest neighbour back) with torch,
by tests/fixtures/blast_ct/make_reference.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.config import MaskingSettings
from domain.imaging import CTVolume, HematomaMask
from inference.masking.blast_ct.ensemble import EnsembleRunner
from inference.masking.blast_ct.masker import (
    CPU_DEFAULT_ENSEMBLE,
    GPU_DEFAULT_ENSEMBLE,
    BlastCtMasker,
)
from inference.masking.blast_ct.preparation import prepare
from inference.masking.blast_ct.weight_files import load_member
from inference.masking.registry import create_masker
from inference.measurements import measure_hematoma
from inference.parameters import BlastCtParameters
from tests.support.blast_ct_phantom import (
    LESION_BOX,
    SCAN_0,
    SMALL_LESION_BOX,
    digest,
    require_shared,
    resample_nearest,
    scan0_head_hu,
    scan0_labels,
)

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "blast_ct"
CLASSES = {1: "intraparenchymal", 2: "extra_axial", 3: "perilesional_oedema", 4: "intraventricular"}


def _ct_volume(hu: np.ndarray, spacing: tuple[float, float, float]) -> CTVolume:
    # Axial, head first supine: columns run left, rows posterior, slices superior (LPS).
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = spacing[2], spacing[1], spacing[0], 1.0
    return CTVolume(hu, affine, spacing, tuple(f"1.2.826.0.1.3680043.2.1125.{i}" for i in range(hu.shape[0])),
                    "1.2.3", "1.2.3.4")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "pipeline_reference.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def phantom_hu() -> np.ndarray:
    require_shared(SCAN_0)
    return scan0_head_hu(*scan0_labels())


def _phantom_ct(phantom_hu: np.ndarray, box: tuple[slice, ...], expected_digest: np.ndarray,
                spacing: tuple[float, float, float]) -> CTVolume:
    hu = resample_nearest(phantom_hu[box], spacing)
    assert digest(hu) == str(expected_digest), "the phantom changed: rerun make_reference.py"
    return _ct_volume(hu, spacing)


@pytest.fixture(scope="module")
def phantom_ct(phantom_hu: np.ndarray, reference: dict[str, np.ndarray]) -> CTVolume:
    spacing = tuple(float(s) for s in reference["spacing"])
    return _phantom_ct(phantom_hu, LESION_BOX, reference["ct_digest"], spacing)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model_1_mask(phantom_ct: CTVolume) -> HematomaMask:
    # The crop has no skull around it, so the whole grid is analysed, as blast-ct does.
    masker = BlastCtMasker(BlastCtParameters(ensemble=(1,), intracranial_box=False))
    return masker.segment(phantom_ct)


def _labels(mask: HematomaMask) -> np.ndarray:
    labels = np.zeros(mask.mask.shape, np.uint8)
    for index, name in CLASSES.items():
        part = mask.mask if name == "intraparenchymal" else getattr(mask, name)
        assert not (labels[part] != 0).any(), "classes overlap"
        labels[part] = index
    return labels


def _dice_per_class_present(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    present = [c for c in CLASSES if (theirs == c).any() or (ours == c).any()]
    return {CLASSES[c]: 2 * np.sum((ours == c) & (theirs == c)) / (np.sum(ours == c) + np.sum(theirs == c))
            for c in present}


def test_one_model_agrees_with_blast_ct_whole_volume_inference(
        model_1_mask: HematomaMask, reference: dict[str, np.ndarray]) -> None:
    theirs = reference["labels_model_1"]
    dice = _dice_per_class_present(_labels(model_1_mask), theirs)
    assert set(dice) == set(CLASSES.values()), "the fixture should hold every class"
    assert min(dice.values()) >= 0.99, dice


def test_ensemble_mean_agrees_with_blast_ct_ensemble(phantom_hu: np.ndarray,
                                                     reference: dict[str, np.ndarray]) -> None:
    spacing = tuple(float(s) for s in reference["spacing"])
    small_ct = _phantom_ct(phantom_hu, SMALL_LESION_BOX, reference["small_ct_digest"], spacing)  # type: ignore[arg-type]
    ensemble = tuple(int(m) for m in reference["ensemble"])
    masker = BlastCtMasker(BlastCtParameters(ensemble=ensemble, intracranial_box=False))
    dice = _dice_per_class_present(masker.labels(small_ct), reference["labels_ensemble_small"])
    assert len(dice) >= 3 and min(dice.values()) >= 0.99, dice


def test_mask_carries_each_class_and_says_what_made_it(model_1_mask: HematomaMask,
                                                       phantom_ct: CTVolume) -> None:
    assert model_1_mask.method_name == "blast-ct"
    assert model_1_mask.method_version == "v1+hemex.1.0 models 1"
    assert model_1_mask.learned
    assert any("not validated on spontaneous intracerebral hemorrhage" in n for n in model_1_mask.notes)
    for name in ("intraventricular", "extra_axial", "perilesional_oedema"):
        assert getattr(model_1_mask, name).shape == phantom_ct.hu.shape
    measured = measure_hematoma(phantom_ct, model_1_mask)
    voxel_ml = phantom_ct.voxel_volume_ml
    assert measured.volume_ml == pytest.approx(np.count_nonzero(model_1_mask.mask) * voxel_ml)
    assert measured.intraventricular_extension is True
    assert measured.intraventricular_volume_ml == pytest.approx(
        np.count_nonzero(model_1_mask.intraventricular) * voxel_ml)
    assert measured.extra_axial_volume_ml == pytest.approx(
        np.count_nonzero(model_1_mask.extra_axial) * voxel_ml)
    assert measured.perilesional_oedema_volume_ml is not None
    assert measured.perilesional_oedema_volume_ml > measured.intraventricular_volume_ml > 0
    assert measured.method_version == model_1_mask.method_version


def test_orientation_and_tiling_do_not_change_the_labels(phantom_ct: CTVolume) -> None:
    part = phantom_ct.hu[4:16, 20:80, 30:90]
    spacing = phantom_ct.spacing_mm
    volume = _ct_volume(np.ascontiguousarray(part), spacing)
    masker = BlastCtMasker(BlastCtParameters(ensemble=(1,), intracranial_box=False))
    labels = masker.labels(volume)
    assert np.unique(labels).size > 2
    # The same head stored feet first and with rows running anterior: slices and rows
    # reversed, their direction cosines negated.
    flipped_affine = volume.affine_lps.copy()
    flipped_affine[:3, 0] *= -1
    flipped_affine[:3, 1] *= -1
    flipped = CTVolume(np.ascontiguousarray(part[::-1, ::-1]), flipped_affine, spacing,
                       volume.sop_instance_uids, "1.2.3", "1.2.3.4")
    np.testing.assert_array_equal(masker.labels(flipped), labels[::-1, ::-1])
    # Many small tiles instead of one: the same voxels, up to float rounding at ties.
    small = BlastCtMasker(BlastCtParameters(ensemble=(1,), intracranial_box=False,
                                            max_tile_voxels=15 * 30 * 30, tiles_per_batch=2))
    assert np.mean(small.labels(volume) == labels) > 0.9999


def test_labels_inside_a_box_do_not_depend_on_the_box(model_1_mask: HematomaMask,
                                                      phantom_ct: CTVolume) -> None:
    # The network reads its context from the whole volume, so a box (the intracranial
    # box, on a real head) gives the same labels inside it as analysing everything.
    prepared = prepare(phantom_ct, restrict_to_intracranial_box=False, box_margin_mm=0.0,
                       max_tile_voxels=75 ** 3, box=((16, 31, 29), (40, 70, 75)))
    runner = EnsembleRunner("cpu:0", tiles_per_batch=1)
    total = runner.probability_sum(prepared, [load_member(1)])
    boxed = prepared.labels_on_ct(np.argmax(total, axis=-1).astype(np.uint8))
    covered = prepared.labels_on_ct(np.ones(prepared.plan.size, np.uint8)) == 1
    assert 0 < covered.sum() < covered.size / 4
    assert not boxed[~covered].any()
    np.testing.assert_array_equal(boxed[covered], _labels(model_1_mask)[covered])


def test_registry_builds_blast_ct_with_the_device_default_ensemble() -> None:
    choice = MaskingSettings(method="blast-ct").choice()
    masker = create_masker(choice.method, choice.parameters)
    assert isinstance(masker, BlastCtMasker)
    expected = GPU_DEFAULT_ENSEMBLE if masker.device.startswith("gpu") else CPU_DEFAULT_ENSEMBLE
    assert tuple(m.number for m in masker.members) == expected
    assert masker.version.endswith("models " + ",".join(map(str, expected)))


@pytest.mark.parametrize("bad", [{"ensemble": ()}, {"ensemble": (1, 1)}, {"ensemble": (13,)},
                                 {"max_tile_voxels": 100}, {"tiles_per_batch": 0},
                                 {"box_margin_mm": -1.0}])
def test_parameters_are_checked(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="blast-ct"):
        BlastCtParameters(**bad)  # type: ignore[arg-type]
