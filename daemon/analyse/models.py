"""The masking method and expansion predictor the node holds, loaded once and kept warm."""

from __future__ import annotations

from daemon.config import Settings
from inference.masking.base import HematomaMasker
from inference.masking.registry import create_masker
from inference.prediction import ExpansionPredictor


def configured_masker(settings: Settings) -> HematomaMasker:
    """The method ``[masking] method`` names, with its parameters.

    Raises
    ------
    ConfigurationError
        An unknown method or invalid parameters.
    """
    choice = settings.masking.choice()
    return create_masker(choice.method, choice.parameters)


def configured_predictor(settings: Settings) -> ExpansionPredictor | None:
    """The configured predictor, or None; Keras (and its backend) load only when needed.

    Raises
    ------
    ModelError
        Weights missing, mismatched, or without a valid model card.
    """
    options = settings.prediction.predictor_options()
    if not settings.prediction.enabled or (options.weights_path, options.image_only_weights_path) == (None, None):
        return None
    from inference.expansion_predictor import create_predictor

    return create_predictor(options)
