"""The masking method and expansion predictor the node holds, loaded once and kept warm."""

from __future__ import annotations

import logging

from daemon.config import Settings
from inference.masking.base import HematomaMasker
from inference.masking.registry import create_masker
from inference.prediction import ExpansionPredictor

log = logging.getLogger(__name__)


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
    # Said at start-up in words, not only as "weights_path": null in the settings line.
    if not settings.prediction.enabled:
        log.warning("expansion prediction is off (prediction.enabled = false): reports give the hematoma"
                    " volume, IVH and BRAIN score, and no expansion probability")
        return None
    if (options.weights_path, options.image_only_weights_path) == (None, None):
        log.warning("no expansion model weights configured (prediction.weights_path and"
                    " prediction.image_only_weights_path are unset): reports give the hematoma volume, IVH"
                    " and BRAIN score, and no expansion probability; docs/model.md says how to add weights")
        return None
    from inference.expansion_predictor import create_predictor

    return create_predictor(options)
