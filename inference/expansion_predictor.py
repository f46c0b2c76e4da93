"""The expansion predictor the daemon holds: Tanioka et al. 2024 models, loaded once, kept warm.

Multimodal CNN Model 2 runs when all five of its clinical variables are known; otherwise
CNN Model 2 (image only) runs if its weights are configured, and the prediction lists
the missing variables. Every prediction carries the card's ``clinically_validated``, so
weights trained on synthetic or unvalidated data are never presented as clinical.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np

from domain.clinical import BINARY_PREDICTOR_VARIABLES, PREDICTOR_VARIABLES, ClinicalVariables
from domain.errors import ModelError
from domain.imaging import CTVolume, HematomaMask
from domain.prediction import ExpansionPrediction
from inference.model_card import ModelCard
from inference.parameters import DeviceChoice, PredictorOptions
from inference.prediction import ExpansionPredictor
from inference.published_domain import outside_published_domain, tilt_statement
from inference.tanioka_preprocessing import ALGORITHM_NAME as PREPROCESSING_NAME
from inference.tanioka_preprocessing import ALGORITHM_VERSION as PREPROCESSING_VERSION
from inference.tanioka_preprocessing import geometry_for_shape, hematoma_image
from inference.weights import LoadedModel, load_model_with_card

log = logging.getLogger("hemex.inference")


def gpu_available() -> bool:
    """Whether the active Keras backend sees a GPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax
        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch
        return bool(torch.cuda.is_available())
    return False


def resolve_device(choice: DeviceChoice) -> str:
    """``cpu:0`` or ``gpu:0`` for ``choice``; ModelError when a GPU is required but absent."""
    if choice == "cpu":
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            try:
                # Hiding the GPUs keeps TF from reserving GPU memory for a CPU node.
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass  # GPUs already initialised: the device scope below still pins the CPU
        return "cpu:0"
    has_gpu = gpu_available()
    if choice == "gpu" and not has_gpu:
        raise ModelError(f"prediction.device = 'gpu' but the {keras.backend.backend()} backend sees no GPU")
    return "gpu:0" if has_gpu else "cpu:0"


@contextmanager
def _on(device: str) -> Iterator[None]:
    with keras.device(device):
        yield


def clinical_vector(clinical: ClinicalVariables, card: ModelCard) -> np.ndarray:
    """The card's variables in order, binaries as 0/1, the rest standardised; (1, n)."""
    values = []
    for name in card.clinical_variables:
        raw = getattr(clinical, name)
        if raw is None:
            raise ValueError(f"{name} is missing")
        if name in BINARY_PREDICTOR_VARIABLES:
            values.append(1.0 if raw else 0.0)
        else:
            values.append(card.standardisation[name].apply(float(raw)))
    return np.asarray([values], dtype=np.float32)


def card_statements(card: ModelCard) -> list[str]:
    """The model card in words, for every report: the issue asks that each SR state the
    weights' training data, intended use and validation figures, not only their name."""
    figures = ", ".join(f"{k}={v}" for k, v in sorted(card.validation.items())) or "none stated"
    return [f"model card: training data: {card.training_data}",
            f"model card: intended use: {card.intended_use}",
            f"model card: validation: {figures}",
            f"model card: clinically validated: {'yes' if card.clinically_validated else 'no'}"]


class TaniokaPredictor:
    """Implements ``ExpansionPredictor`` with Multimodal CNN Model 2 and/or CNN Model 2."""

    def __init__(self, multimodal: LoadedModel | None, image_only: LoadedModel | None,
                 device: str) -> None:
        if multimodal is None and image_only is None:
            raise ModelError("no expansion model loaded")
        if multimodal is not None and not multimodal.card.model_spec().multimodal:
            raise ModelError(f"{multimodal.path.name}: card says {multimodal.card.architecture}, "
                             "expected multimodal_cnn_model2")
        if image_only is not None and image_only.card.model_spec().multimodal:
            raise ModelError(f"{image_only.path.name}: card says multimodal, expected cnn_model2")
        self.multimodal = multimodal
        self.image_only = image_only
        self.device = device

    def warm_up(self) -> None:
        """Run each model once on zeros so the first study pays no tracing cost."""
        for loaded in (self.multimodal, self.image_only):
            if loaded is not None:
                self._run(loaded, np.zeros((1, *loaded.card.input_shape), np.float32),
                          np.zeros((1, len(loaded.card.clinical_variables)), np.float32))

    def _run(self, loaded: LoadedModel, image: np.ndarray, clinical: np.ndarray) -> float:
        inputs = [image, clinical] if loaded.card.model_spec().multimodal else image
        with _on(self.device):
            out = loaded.model.predict_on_batch(inputs)
        return float(np.asarray(keras.ops.convert_to_numpy(out)).reshape(-1)[0])

    def predict(self, volume: CTVolume, mask: HematomaMask,
                clinical: ClinicalVariables) -> ExpansionPrediction | None:
        """Predict expansion; None when no configured model can run on what is known."""
        missing = clinical.missing(PREDICTOR_VARIABLES)
        use_multimodal = self.multimodal is not None and not missing
        loaded = self.multimodal if use_multimodal else self.image_only
        if loaded is None:
            log.info("event=prediction_skipped reason=missing_variables missing=%s", ",".join(missing))
            return None
        card = loaded.card
        geometry = geometry_for_shape(card.input_shape)
        image = hematoma_image(volume, mask, geometry)[np.newaxis]
        vector = (clinical_vector(clinical, card) if use_multimodal
                  else np.zeros((1, 0), np.float32))
        probability = self._run(loaded, image, vector)
        notes = [f"device={self.device} backend={keras.backend.backend()}",
                 f"weights loaded as {loaded.load_method}",
                 (f"preprocessing={PREPROCESSING_NAME} {PREPROCESSING_VERSION} "
                  f"({card.input_shape[0]}x{card.input_shape[1]}x{card.input_shape[2]})"),
                 *card_statements(card)]
        if not use_multimodal:
            notes.append("image-only fallback (CNN Model 2): clinical variables missing: "
                         + (", ".join(missing) if missing else "none"))
        tilt = tilt_statement(volume)
        if tilt is not None:
            notes.append(tilt)
        if not card.clinically_validated:
            notes.append("NOT clinically validated: weights' model card says so; not for clinical use")
        log.info("event=prediction model=%s version=%s device=%s fallback=%s validated=%s",
                 card.model_name, card.model_version, self.device, not use_multimodal,
                 card.clinically_validated)
        return ExpansionPrediction(
            probability=probability,
            model_name=card.model_name,
            model_version=card.model_version,
            weights_origin=card.origin,
            clinically_validated=card.clinically_validated,
            variables_used=PREDICTOR_VARIABLES if use_multimodal else (),
            variables_missing=missing,
            image_only_fallback=not use_multimodal,
            notes=tuple(notes),
            outside_published_domain=outside_published_domain(
                volume, mask, geometry, missing, image_only_fallback=not use_multimodal),
        )


def create_predictor(settings: PredictorOptions, warm_up: bool = True) -> ExpansionPredictor | None:
    """Load the configured models once; None when no weights are configured.

    The daemon then reports "no validated model configured" instead of a prediction.

    Raises
    ------
    ModelError
        Weights or card missing/invalid, or ``device = "gpu"`` without a GPU.
    """
    if settings.weights_path is None and settings.image_only_weights_path is None:
        return None
    device = resolve_device(settings.device)
    with _on(device):
        multimodal = load_model_with_card(settings.weights_path) if settings.weights_path else None
        image_only = (load_model_with_card(settings.image_only_weights_path)
                      if settings.image_only_weights_path else None)
    predictor = TaniokaPredictor(multimodal, image_only, device)
    if warm_up:
        predictor.warm_up()
    log.info("event=predictor_loaded device=%s backend=%s multimodal=%s image_only=%s pid=%d",
             device, keras.backend.backend(), multimodal is not None, image_only is not None,
             os.getpid())
    return predictor
