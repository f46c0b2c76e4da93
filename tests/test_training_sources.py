"""Training data from DICOM folders, masks matched by affine, and automatic masks.

Synthetic phantoms only (tests/support/phantoms.make_head_ct_series: 64 x 64 pixels of
3.6 mm, 12 slices of 5 mm, an ellipsoid hematoma whose voxels are known); no patient data.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from daemon.cli import main as hemex_main
from domain.clinical import ClinicalVariables
from domain.errors import InvalidInputError
from domain.imaging import CTVolume, HematomaMask
from inference.nifti_io import mask_to_nifti
from inference.tanioka_preprocessing import geometry_for_shape
from inference.training.case_images import mask_on_ct_grid, read_dicom_folder
from inference.training.dataset import Case, prepare_images
from inference.training.evaluate import evaluate
from inference.training.train import TrainConfig, train
from inference.weights import load_model_with_card
from tests.support.phantoms import PhantomSeries, make_head_ct_series
from tests.support.tiny_expansion_model import tiny_spec

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
CLINICAL = {"anticoagulant_use": "no", "systolic_bp_mmhg": "170", "diastolic_bp_mmhg": "95",
            "pt_inr": "1.1", "hours_onset_to_ct": "2.0"}


def phantom(folder: Path, radii: tuple[float, float, float] = (20.0, 16.0, 14.0),
            seed: int = 7) -> PhantomSeries:
    return make_head_ct_series(folder, slices=12, rows=64, pixel_mm=3.6, slice_mm=5.0,
                               hematoma_radii_mm=radii, seed=seed)


def save_dcm2niix_style(array: np.ndarray, volume: CTVolume, path: Path) -> None:
    """``array`` (slice, row, column) as dcm2niix stores an axial series: i = column,
    j = row reversed (posterior -> anterior), k = slice, with the matching RAS affine."""
    ijk = volume.affine_lps[:, [2, 1, 0, 3]].copy()
    ijk[:3, 3] += (array.shape[1] - 1) * ijk[:3, 1]
    ijk[:3, 1] *= -1
    data = np.ascontiguousarray(array.transpose(2, 1, 0)[:, ::-1, :])
    nib.save(nib.Nifti1Image(data, LPS_TO_RAS @ ijk), path)


def test_dicom_folder_and_its_nifti_conversion_give_the_same_model_input(tmp_path: Path) -> None:
    series = phantom(tmp_path / "dicom")
    volume = read_dicom_folder(tmp_path / "dicom")
    assert volume.hu.shape == (12, 64, 64) and volume.spacing_mm == pytest.approx((5.0, 3.6, 3.6))
    save_dcm2niix_style(np.rint(volume.hu).astype(np.int16), volume, tmp_path / "ct.nii.gz")
    save_dcm2niix_style(series.hematoma.astype(np.uint8), volume, tmp_path / "mask_flipped.nii.gz")
    nib.save(mask_to_nifti(volume.geometry, HematomaMask(series.hematoma, "truth", "0")), tmp_path / "mask.nii.gz")
    # A mask stored with its rows the other way round lands on the CT's voxels.
    placed = mask_on_ct_grid(tmp_path / "mask_flipped.nii.gz", volume)
    assert np.array_equal(placed.mask, series.hematoma) and series.hematoma.any()
    cases = [Case("dicom", tmp_path / "dicom", tmp_path / "mask_flipped.nii.gz", 1, ClinicalVariables()),
             Case("nifti", tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz", 1, ClinicalVariables())]
    prepared = prepare_images(cases, geometry_for_shape(tiny_spec().input_shape), tmp_path / "cache")
    from_dicom, from_nifti = (np.load(p) for p in prepared.paths)
    assert np.count_nonzero(from_dicom) > 0
    assert np.allclose(from_dicom, from_nifti, atol=1e-6)
    assert prepared.automatic_masks == 0 and prepared.masks_statement() == "masks: all 2 from the manifest"


def test_masks_off_the_ct_grid_and_mixed_folders_are_refused(tmp_path: Path) -> None:
    series = phantom(tmp_path / "dicom")
    volume = read_dicom_folder(tmp_path / "dicom")
    image = mask_to_nifti(volume.geometry, HematomaMask(series.hematoma, "truth", "0"))
    shifted = image.affine.copy()
    shifted[:3, 3] += image.affine[:3, 0]  # one voxel along i
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), tmp_path / "shifted.nii.gz")
    with pytest.raises(InvalidInputError, match="does not cover"):
        mask_on_ct_grid(tmp_path / "shifted.nii.gz", volume)
    coarse = image.affine.copy()
    coarse[:3, :3] *= 2.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), coarse), tmp_path / "coarse.nii.gz")
    with pytest.raises(InvalidInputError, match="not the CT's"):
        mask_on_ct_grid(tmp_path / "coarse.nii.gz", volume)
    make_head_ct_series(tmp_path / "dicom", slices=3, rows=32, pixel_mm=7.2, slice_mm=5.0, seed=3)
    with pytest.raises(InvalidInputError, match="2 series in one folder"):
        read_dicom_folder(tmp_path / "dicom")


def _manifest(root: Path, rows: list[dict[str, str]]) -> Path:
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_empty_mask_column_is_masked_automatically_and_said_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = []
    for n in range(4):
        label = n % 2
        phantom(tmp_path / f"case{n}", radii=(24.0, 18.0, 15.0) if label else (14.0, 11.0, 10.0), seed=n)
        rows.append({"case_id": f"c{n}", "ct": f"case{n}", "mask": "", "label": str(label), **CLINICAL})
    manifest = _manifest(tmp_path, rows)
    with caplog.at_level(logging.INFO, logger="hemex.training"):
        result = train(TrainConfig(manifest=manifest, out_dir=tmp_path / "run", spec=tiny_spec(), epochs=1,
                                   val_fraction=0.5, seed=1, verbose=0))
    assert sum("event=automatic_mask " in r.getMessage() for r in caplog.records) == 4
    assert any("event=automatic_masks count=4" in r.getMessage() for r in caplog.records)
    card = load_model_with_card(result.best_path).card
    assert "4 computed automatically by hemex-threshold" in card.training_data
    assert "not drawn by experts" in card.training_data and card.clinically_validated is False
    # The automatic masks found the phantoms' hematomas: the cached inputs are not empty.
    assert all(np.count_nonzero(np.load(p)) > 0 for p in sorted((tmp_path / "run" / "cache").glob("*.npy")))
    report = evaluate(result.best_path, manifest, tmp_path / "eval", n_boot=20)
    assert "computed automatically by hemex-threshold" in report.masks


def test_cli_reports_a_bad_manifest_without_a_traceback(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    phantom(tmp_path / "case0")
    manifest = _manifest(tmp_path, [{"case_id": "c0", "ct": "case0", "mask": "", "label": "1", **CLINICAL},
                                    {"case_id": "c1", "ct": "case1", "mask": "", "label": "0", **CLINICAL}])
    rc = hemex_main(["train", "--data", str(manifest), "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 2 and "manifest.csv line 3: ct not found: case1" in capsys.readouterr().err
