"""The shipped BLAST-CT ensemble: Keras weight files with their model cards, loaded by layer name.

A Keras 3 ``.weights.h5`` file keys weights by layer position ("conv3d_4"), and the
order of layers differs between input sizes (a pathway's crop is present or not), so
the files are always read into the network at the size they were written at
(``CANONICAL_INPUT``) and handed on by layer name to a network of any other size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import keras
import numpy as np

from domain.errors import ModelError
from inference.masking.blast_ct.model_card import BlastCtModelCard, load_card
from inference.masking.blast_ct.network import build_deepmedic, input_size_for
from inference.parameters import BLAST_CT_ENSEMBLE_SIZE

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CANONICAL_INPUT = input_size_for((15, 15, 15))
ENSEMBLE_SIZE = BLAST_CT_ENSEMBLE_SIZE
LayerWeights = dict[str, list[np.ndarray]]


@dataclass(frozen=True)
class EnsembleMember:
    """One model of the ensemble: its number (1-12), card and weights by layer name."""

    number: int
    card: BlastCtModelCard
    weights: LayerWeights = field(repr=False)

    def apply_to(self, model: keras.Model) -> None:
        for name, arrays in self.weights.items():
            model.get_layer(name).set_weights(arrays)


def weights_path(number: int, folder: Path = WEIGHTS_DIR) -> Path:
    return folder / f"model_{number}.weights.h5"


@lru_cache(maxsize=1)
def _canonical_model() -> keras.Model:
    return build_deepmedic(CANONICAL_INPUT)


def layer_weights(model: keras.Model) -> LayerWeights:
    """Every weight-bearing layer of ``model`` by name."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()]
            for layer in model.layers if layer.weights}


def load_member(number: int, folder: Path = WEIGHTS_DIR) -> EnsembleMember:
    """Ensemble member ``number`` with its card; ModelError if either file is missing or bad."""
    if not 1 <= number <= ENSEMBLE_SIZE:
        raise ModelError(f"BLAST-CT has ensemble members 1-{ENSEMBLE_SIZE}, not {number}")
    path = weights_path(number, folder)
    card = load_card(path)
    if card.ensemble_member != number:
        raise ModelError(f"{path.name}: its card is for member {card.ensemble_member}")
    model = _canonical_model()
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"BLAST-CT weights {path.name} cannot be loaded: {exc}") from exc
    return EnsembleMember(number, card, layer_weights(model))
