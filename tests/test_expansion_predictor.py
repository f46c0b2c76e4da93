"""The expansion predictor seam with tiny synthetic-weight models on a phantom (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domain.clinical import ClinicalVariables
from domain.errors import ModelError
from domain.imaging import CTVolume, HematomaMask
from inference.expansion_predictor import TaniokaPredictor, create_predictor, gpu_available
from inference.parameters import PredictorOptions
from inference.tanioka_preprocessing import geometry_for_shape, hematoma_image
from tests.support.tiny_expansion_model import STANDARDISATION, TINY_SHAPE, save_tiny

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

FULL = ClinicalVariables(anticoagulant_use=True, systolic_bp_mmhg=185.0, diastolic_bp_mmhg=100.0,
                         pt_inr=2.4, hours_onset_to_ct=1.5)
PARTIAL = ClinicalVariables(anticoagulant_use=False, systolic_bp_mmhg=150.0, diastolic_bp_mmhg=80.0)


def _phantom() -> tuple[CTVolume, HematomaMask]:
    """20 axial slices of 5 mm, 64 x 64 of 4 mm; a 60 HU 'hematoma' in 40 HU 'brain'."""
    hu = np.full((20, 64, 64), 40.0, np.float32)
    hu[8:12, 20:30, 25:40] = 60.0
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = (0, 0, 5.0), (0, 4.0, 0), (4.0, 0, 0)
    vol = CTVolume(hu=hu, affine_lps=affine, spacing_mm=(5.0, 4.0, 4.0),
                   sop_instance_uids=tuple(f"1.2.{i}" for i in range(20)),
                   series_instance_uid="1.2", study_instance_uid="1")
    return vol, HematomaMask(mask=hu > 50, method_name="threshold", method_version="test")


@pytest.fixture
def weights(tmp_path: Path) -> dict[str, Path]:
    paths = {"multimodal": tmp_path / "mm.keras", "image": tmp_path / "img.h5",
             "unvalidated": tmp_path / "unvalidated.keras"}
    save_tiny(paths["multimodal"], validated=True)
    save_tiny(paths["image"], architecture="cnn_model2", validated=True, seed=2)
    save_tiny(paths["unvalidated"], validated=False)
    return paths


def test_no_weights_configured_gives_no_predictor() -> None:
    assert create_predictor(PredictorOptions()) is None


def test_all_variables_runs_multimodal_on_the_preprocessed_input(weights: dict[str, Path]) -> None:
    predictor = create_predictor(PredictorOptions(weights_path=weights["multimodal"],
                                                    image_only_weights_path=weights["image"], device="cpu"))
    assert isinstance(predictor, TaniokaPredictor)
    vol, mask = _phantom()
    p = predictor.predict(vol, mask, FULL)
    assert p is not None and not p.image_only_fallback and p.variables_missing == ()
    assert p.variables_used == ("anticoagulant_use", "systolic_bp_mmhg", "diastolic_bp_mmhg",
                                "pt_inr", "hours_onset_to_ct")
    assert p.clinically_validated and any("device=cpu:0" in n for n in p.notes)
    # Same value as the model on the published preprocessing and standardisation by hand.
    image = hematoma_image(vol, mask, geometry_for_shape(TINY_SHAPE))[None]
    assert image.any()
    s = STANDARDISATION
    clinical = np.array([[1.0, (185 - s["systolic_bp_mmhg"].mean) / s["systolic_bp_mmhg"].sd,
                          (100 - s["diastolic_bp_mmhg"].mean) / s["diastolic_bp_mmhg"].sd,
                          (2.4 - s["pt_inr"].mean) / s["pt_inr"].sd,
                          (1.5 - s["hours_onset_to_ct"].mean) / s["hours_onset_to_ct"].sd]], np.float32)
    expected = float(np.asarray(predictor.multimodal.model.predict_on_batch([image, clinical]))[0, 0])
    assert p.probability == pytest.approx(expected, rel=1e-5)


def test_missing_variables_fall_back_to_image_only_and_are_listed(weights: dict[str, Path]) -> None:
    predictor = create_predictor(PredictorOptions(weights_path=weights["multimodal"],
                                                    image_only_weights_path=weights["image"], device="cpu"))
    vol, mask = _phantom()
    p = predictor.predict(vol, mask, PARTIAL)
    assert p is not None and p.image_only_fallback
    assert p.variables_missing == ("pt_inr", "hours_onset_to_ct") and p.variables_used == ()
    assert any("image-only fallback" in n and "pt_inr" in n for n in p.notes)
    assert 0.0 < p.probability < 1.0
    assert any(s.startswith("image-only CNN Model 2 ran because clinical variables are missing "
                            "(pt_inr, hours_onset_to_ct)") for s in p.outside_published_domain)


def test_prediction_says_where_its_input_leaves_the_published_domain(weights: dict[str, Path]) -> None:
    """5 mm slices on a 64 x 64 matrix with an automatic mask: three statements, none
    about clinical variables (all five known)."""
    predictor = create_predictor(PredictorOptions(weights_path=weights["multimodal"], device="cpu"))
    vol, mask = _phantom()
    p = predictor.predict(vol, mask, FULL)
    assert p is not None
    assert p.outside_published_domain == (
        ("source slices 5 mm thick: the published cohorts used slices of 2 mm or thinner "
        "(resampled to 10 mm here)"),
        "image matrix 64 x 64: the published cohorts were 512 x 512 or larger",
        ("hematoma mask made automatically by threshold test: the published model was trained "
        "and tested on masks drawn by experts"),
    )
    assert not any("gantry tilt" in n for n in p.notes)


def test_tilted_series_says_its_tilt_was_corrected(weights: dict[str, Path]) -> None:
    predictor = create_predictor(PredictorOptions(weights_path=weights["multimodal"], device="cpu"))
    vol, mask = _phantom()
    affine = vol.affine_lps.copy()
    affine[:3, 0] = (0, 5.0 * np.tan(np.radians(20)), 5.0)  # each slice 1.8 mm further back
    tilted = CTVolume(hu=vol.hu, affine_lps=affine, spacing_mm=vol.spacing_mm,
                      sop_instance_uids=vol.sop_instance_uids, series_instance_uid="1.2",
                      study_instance_uid="1")
    p = predictor.predict(tilted, mask, FULL)
    assert p is not None
    assert any(n.startswith("gantry tilt of 20.0 degrees corrected") for n in p.notes)


def test_missing_variables_without_fallback_gives_no_prediction(weights: dict[str, Path]) -> None:
    predictor = create_predictor(PredictorOptions(weights_path=weights["multimodal"], device="cpu"))
    vol, mask = _phantom()
    assert predictor.predict(vol, mask, PARTIAL) is None


def test_unvalidated_card_is_flagged(weights: dict[str, Path]) -> None:
    predictor = create_predictor(PredictorOptions(weights_path=weights["unvalidated"], device="cpu"))
    vol, mask = _phantom()
    p = predictor.predict(vol, mask, FULL)
    assert p is not None and p.clinically_validated is False
    assert any("NOT clinically validated" in n for n in p.notes)
    assert p.model_name == "tiny test model" and p.weights_origin == "random initialisation in a test"
    # The rest of the card travels with every prediction into the SR's statements.
    assert "model card: training data: none (synthetic test)" in p.notes
    assert "model card: intended use: tests only" in p.notes
    assert "model card: validation: none stated" in p.notes
    assert "model card: clinically validated: no" in p.notes
    assert any(n.startswith("preprocessing=Tanioka 2024 preprocessing 2.0") for n in p.notes)


def test_missing_card_stops_the_predictor(weights: dict[str, Path]) -> None:
    (weights["multimodal"].parent / "mm.keras.card.json").unlink()
    with pytest.raises(ModelError):
        create_predictor(PredictorOptions(weights_path=weights["multimodal"], device="cpu"))


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU refusal")
def test_gpu_required_without_gpu_is_a_model_error(weights: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="no GPU"):
        create_predictor(PredictorOptions(weights_path=weights["multimodal"], device="gpu"))
