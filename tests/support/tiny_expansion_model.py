"""A tiny Tanioka-shaped model and its card, for fast CPU tests (synthetic, never clinical)."""

from __future__ import annotations

from pathlib import Path

import keras

from domain.clinical import PREDICTOR_VARIABLES
from inference.model_card import ModelCard, Standardisation, graph_of
from inference.tanioka_models import ModelSpec, build_model
from inference.weights import save_model_with_card

TINY_SHAPE = (16, 16, 16, 1)
STANDARDISATION = {
    "systolic_bp_mmhg": Standardisation(160.0, 25.0),
    "diastolic_bp_mmhg": Standardisation(90.0, 15.0),
    "pt_inr": Standardisation(1.1, 0.3),
    "hours_onset_to_ct": Standardisation(3.0, 2.0),
}


def tiny_spec(architecture: str = "multimodal_cnn_model2") -> ModelSpec:
    return ModelSpec(architecture=architecture, input_shape=TINY_SHAPE,  # type: ignore[arg-type]
                     filters=(2, 2, 2, 2), kernels=((3, 3, 3),) * 4, padding="same",
                     dense_units=8, clinical_units=(8, 8), head_units=8)


def tiny_card(spec: ModelSpec, validated: bool = False) -> ModelCard:
    return ModelCard(
        model_name="tiny test model", model_version="0", architecture=spec.architecture,
        origin="random initialisation in a test", training_data="none (synthetic test)",
        intended_use="tests only", validation={}, clinically_validated=validated,
        input_shape=spec.input_shape,
        clinical_variables=PREDICTOR_VARIABLES if spec.multimodal else (),
        standardisation=STANDARDISATION if spec.multimodal else {}, graph=graph_of(spec))


def save_tiny(path: Path, architecture: str = "multimodal_cnn_model2",
              validated: bool = False, seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    spec = tiny_spec(architecture)
    model = build_model(spec)
    save_model_with_card(model, tiny_card(spec, validated), path)
    return model
