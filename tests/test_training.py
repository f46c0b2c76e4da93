"""Training loop, evaluation and CLI on a tiny synthetic NIfTI data set (no patient data)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from daemon.cli import main as hemex_main
from domain.clinical import ClinicalVariables
from inference.nifti_io import load_nifti_volume
from inference.tanioka_preprocessing import geometry_for_shape
from inference.training.augment import Variant, epoch_variants, flipped_image, rotated_image
from inference.training.dataset import Case, expansion_label, load_manifest, prepare_images
from inference.training.metrics import binary_metrics, roc_auc, wilson_interval
from inference.training.train import TrainConfig, train
from inference.weights import load_model_with_card
from tests.support.tiny_expansion_model import tiny_spec

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 synthetic cases, 32 x 32 x 20 voxels of 8 x 8 x 10 mm; expansions have larger blobs."""
    root = tmp_path_factory.mktemp("ich")
    rng = np.random.default_rng(0)
    affine = np.diag([8.0, 8.0, 10.0, 1.0])
    rows = []
    for n in range(10):
        label = int(n % 3 == 0)
        ct = rng.normal(35, 5, (32, 32, 20)).astype(np.int16)
        r = 6 if label else 3
        mask = np.zeros(ct.shape, np.uint8)
        mask[16 - r:16 + r, 14 - r:14 + r, 8:12] = 1
        ct[mask > 0] = 65
        nib.save(nib.Nifti1Image(ct, affine), root / f"ct{n}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / f"mask{n}.nii.gz")
        row = {"case_id": f"c{n}", "ct": f"ct{n}.nii.gz", "mask": f"mask{n}.nii.gz",
               "label": str(label), "baseline_volume_ml": "", "followup_volume_ml": "",
               "anticoagulant_use": "yes" if n % 2 else "no", "systolic_bp_mmhg": str(140 + 5 * n),
               "diastolic_bp_mmhg": str(80 + n), "pt_inr": f"{1.0 + 0.1 * n:.1f}",
               "hours_onset_to_ct": f"{0.5 + 0.4 * n:.1f}"}
        if n == 9:  # label from volumes: 20 -> 24 mL is +20 % and +4 mL: no expansion
            row.update(label="", baseline_volume_ml="20", followup_volume_ml="24")
        rows.append(row)
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root / "manifest.csv"


@pytest.mark.parametrize("base, follow, label", [(10, 16.5, 1), (10, 16, 1), (30, 36, 0), (30, 40.1, 1),
                                                 (3, 4.1, 1), (3, 3.9, 0)])
def test_expansion_label_rule(base: float, follow: float, label: int) -> None:
    assert expansion_label(base, follow) == label  # > 6 mL or > 33 %


def test_manifest_and_nifti_geometry(dataset: Path) -> None:
    cases = load_manifest(dataset)
    assert [c.label for c in cases] == [1, 0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert cases[1].clinical.anticoagulant_use is True and cases[2].clinical.pt_inr == pytest.approx(1.2)
    vol = load_nifti_volume(cases[0].ct_path)
    assert vol.hu.shape == (20, 32, 32) and vol.spacing_mm == (10.0, 8.0, 8.0)
    assert vol.affine_lps[2, 0] > 0  # NIfTI k grows superior -> cranial is the last slice


def test_cache_is_not_reused_for_another_mask_with_the_same_case_id(tmp_path: Path) -> None:
    """An edited mask (or another manifest reusing a case_id) in the same output folder
    must be preprocessed again, not served the cached image of the old one."""
    affine = np.diag([8.0, 8.0, 10.0, 1.0])
    nib.save(nib.Nifti1Image(np.full((32, 32, 20), 60, np.int16), affine), tmp_path / "ct.nii.gz")
    mask = np.zeros((32, 32, 20), np.uint8)
    mask[10:14, 10:14, 8:12] = 1
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "mask.nii.gz")
    case = Case("same-id", tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz", 1, ClinicalVariables())
    geometry = geometry_for_shape(tiny_spec().input_shape)
    first = np.load(prepare_images([case], geometry, tmp_path / "cache").paths[0])
    mask[4:28, 4:28, 4:16] = 1  # the site redraws a larger mask under the same name
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "mask.nii.gz")
    os.utime(tmp_path / "mask.nii.gz", ns=(1, 2))  # a different mtime even on coarse clocks
    second = np.load(prepare_images([case], geometry, tmp_path / "cache").paths[0])
    assert np.count_nonzero(second) > 2 * np.count_nonzero(first) > 0


def test_only_expansion_cases_are_augmented_as_the_authors_did() -> None:
    labels = np.array([1, 0, 0, 0, 0, 0, 1, 0])
    variants = epoch_variants(labels)
    for case in range(8):
        seen = {(v.rotated, v.flipped) for v in variants if v.index == case}
        if labels[case]:  # as is, rotated 30 degrees, flipped, both: four per epoch
            assert seen == {(False, False), (True, False), (False, True), (True, True)}
        else:
            assert seen == {(False, False)} and Variant(case) in variants
    assert len(variants) == 8 + 2 * 3


def test_rotation_and_flip_are_the_authors() -> None:
    img = np.zeros((16, 16, 4, 1), np.float32)
    img[4:12, 6:10] = 0.9
    img[5, 2, 1] = 1.0
    rotated = rotated_image(img)
    expected = np.clip(ndimage.rotate(img[..., 0], 30, reshape=False), 0, 1)  # cubic
    assert rotated.shape == img.shape and rotated.dtype == np.float32
    assert np.allclose(rotated[..., 0], expected, atol=1e-6) and rotated.max() <= 1.0
    flipped = flipped_image(img)
    assert flipped[5, 13, 1, 0] == 1.0 and flipped[5, 2, 1, 0] == 0.0  # left-right


def test_metrics_known_answers() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    m = binary_metrics(np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1, 0.2]), n_boot=200, seed=1)
    assert (m.tp, m.fn, m.fp, m.tn) == (1, 1, 1, 2)
    assert m.sensitivity.value == 0.5 and m.specificity.value == pytest.approx(2 / 3)
    assert m.auc.value == pytest.approx(5 / 6)


def test_tiny_model_trains_and_checkpoints(dataset: Path, tmp_path: Path) -> None:
    result = train(TrainConfig(manifest=dataset, out_dir=tmp_path, spec=tiny_spec(), epochs=2,
                               val_fraction=0.3, seed=7, verbose=0))
    with result.history_path.open() as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == 2 and all(math.isfinite(float(r["loss"])) for r in history)
    assert result.last_path.is_file() and result.best_path.is_file()
    assert 1 <= result.best_epoch <= 2
    loaded = load_model_with_card(result.best_path)
    assert loaded.card.clinically_validated is False
    assert set(loaded.card.standardisation) == {"systolic_bp_mmhg", "diastolic_bp_mmhg", "pt_inr",
                                               "hours_onset_to_ct"}
    assert loaded.card.validation["internal_validation_n"] == 3


def test_cli_train_then_evaluate(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = hemex_main(["train", "--data", str(dataset), "--out", str(out), "--epochs", "1",
                     "--input-shape", "16,16,16", "--filters", "2,2,2,2",
                     "--kernels", "3x3x3,3x3x3,3x3x3,3x3x3", "--padding", "same", "--quiet"])
    assert rc == 0 and (out / "best.keras.card.json").is_file()
    rc = hemex_main(["evaluate", "--weights", str(out / "best.keras"), "--data", str(dataset),
                     "--out", str(tmp_path / "eval"), "--bootstrap", "200"])
    printed = capsys.readouterr().out
    assert rc == 0
    for word in ("sensitivity", "specificity", "accuracy", "ROC AUC", "NOT clinically validated"):
        assert word in printed
    for png in ("roc.png", "calibration.png"):
        assert (tmp_path / "eval" / png).read_bytes()[:8] == PNG
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 10 and metrics["n_positive"] == 3
