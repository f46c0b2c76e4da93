"""Load and save expansion-model weights, always together with their model card.

Formats:

- ``.keras``: the project's own files (Keras 3 archive with graph and weights).
- ``.weights.h5``: Keras 3 weights-only HDF5; the graph is built from the card.
- ``.h5`` / ``.hdf5``: Keras (2 or 3) legacy HDF5, as the authors published (419 MB,
  full model saved each epoch). A full-model file is loaded with its own graph; if
  Keras 3 cannot rebuild that graph, or the file holds weights only, the graph is built
  from the card and the weights are loaded by topology (weight-bearing layers in order).

Both weights-only formats match layers by their order in the graph, not by name (a
Keras 3 ``.weights.h5`` by class and position): the card's graph is built in the
authors' layer order (``tanioka_models``), so a file saved from their graph loads
into it (tests/test_weights_roundtrip.py).

Either way the loaded model's inputs must match the card, or it is a ModelError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import keras

from domain.errors import ModelError
from inference.model_card import ModelCard, load_model_card, write_model_card
from inference.tanioka_models import build_model

_LEGACY_H5 = (".h5", ".hdf5")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, its card, and how it was loaded."""

    model: keras.Model
    card: ModelCard
    path: Path
    load_method: str


def _input_shapes(model: keras.Model) -> list[tuple[int | None, ...]]:
    return [tuple(t.shape) for t in model.inputs]


def _check_matches_card(model: keras.Model, card: ModelCard, path: Path) -> None:
    spec = card.model_spec()
    expected: list[tuple[int | None, ...]] = [(None, *spec.input_shape)]
    if spec.multimodal:
        expected.append((None, spec.n_clinical))
    if _input_shapes(model) != expected:
        raise ModelError(f"{path.name}: model inputs {_input_shapes(model)} do not match its card "
                         f"({expected})")
    if tuple(model.outputs[0].shape) != (None, 1):
        raise ModelError(f"{path.name}: model output {tuple(model.outputs[0].shape)} is not (None, 1)")


def _image_input_first(model: keras.Model, card: ModelCard) -> tuple[keras.Model, bool]:
    """``model`` taking [image, clinical], wrapping one saved as [clinical, image].

    A full model brings its own input order, which the paper does not state; the
    predictor and evaluation always pass the image first.
    """
    spec = card.model_spec()
    swapped = [(None, spec.n_clinical), (None, *spec.input_shape)]
    if not spec.multimodal or _input_shapes(model) != swapped:
        return model, False
    image = keras.Input(shape=spec.input_shape, name="image")
    clinical = keras.Input(shape=(spec.n_clinical,), name="clinical")
    return keras.Model([image, clinical], model([clinical, image]), name=model.name), True


def _is_full_model_h5(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        return "model_config" in f.attrs


def _load_into_built(path: Path, card: ModelCard) -> keras.Model:
    model = build_model(card.model_spec())
    try:
        model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"{path.name}: weights do not fit the graph its card describes: {exc}") from exc
    return model


def load_model_with_card(path: Path) -> LoadedModel:
    """Load the weights at ``path`` and the card beside them.

    Raises
    ------
    ModelError
        The file or card is missing or invalid, or the weights do not fit the card.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    card = load_model_card(path)
    name = path.name.lower()
    method: str
    if name.endswith(".keras"):
        try:
            model = keras.saving.load_model(str(path), compile=False)
        except (ValueError, OSError, TypeError) as exc:
            raise ModelError(f"{path.name}: not a loadable .keras file: {exc}") from exc
        method = "keras archive"
    elif name.endswith(".weights.h5"):
        model, method = _load_into_built(path, card), "weights-only (Keras 3) into card graph"
    elif name.endswith(_LEGACY_H5):
        try:
            full = _is_full_model_h5(path)
        except OSError as exc:
            raise ModelError(f"{path.name}: not an HDF5 file: {exc}") from exc
        model = None
        method = "weights-only HDF5 by topology into card graph"
        if full:
            try:
                model = keras.saving.load_model(str(path), compile=False)
                method = "full-model HDF5 with its own graph"
            except (ValueError, TypeError, KeyError) as exc:
                # Keras 3 cannot always rebuild a Keras 2 graph; the weights still load
                # by topology into the graph the card describes.
                method = f"full-model HDF5 by topology into card graph ({type(exc).__name__})"
        if model is None:
            model = _load_into_built(path, card)
    else:
        raise ModelError(f"{path.name}: unknown weights format (use .keras, .weights.h5 or .h5)")
    model, reordered = _image_input_first(model, card)
    if reordered:
        method += ", inputs saved as [clinical, image], reordered"
    _check_matches_card(model, card, path)
    return LoadedModel(model=model, card=card, path=path, load_method=method)


def save_model_with_card(model: keras.Model, card: ModelCard, path: Path) -> Path:
    """Save ``model`` to ``path`` (.keras, .h5 full model, or .weights.h5) and its card.

    The card is written after the weights, so a card never describes a missing file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    if path.name.endswith(".weights.h5"):
        model.save_weights(str(tmp))
    elif path.suffix == ".keras" or path.suffix in _LEGACY_H5:
        model.save(str(tmp))
    else:
        raise ModelError(f"{path.name}: unknown weights format (use .keras, .weights.h5 or .h5)")
    tmp.replace(path)
    write_model_card(card, path)
    return path
