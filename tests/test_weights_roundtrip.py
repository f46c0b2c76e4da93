"""Weights round trip through HDF5 and .keras with their model card (tiny synthetic model)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras import layers

from domain.errors import ModelError
from inference.model_card import load_model_card, write_model_card
from inference.tanioka_models import ModelSpec, build_model
from inference.weights import _load_into_built, load_model_with_card, save_model_with_card
from tests.support.tiny_expansion_model import TINY_SHAPE, save_tiny, tiny_card, tiny_spec

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.random((2, *TINY_SHAPE), dtype=np.float32), rng.normal(size=(2, 5)).astype(np.float32)]


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "model.weights.h5"])
def test_round_trip_gives_identical_predictions(tmp_path: Path, name: str) -> None:
    original = save_tiny(tmp_path / name)
    loaded = load_model_with_card(tmp_path / name)
    x = _inputs()
    assert np.array_equal(np.asarray(original.predict_on_batch(x)), np.asarray(loaded.model.predict_on_batch(x)))
    assert loaded.card == tiny_card(tiny_spec())
    assert loaded.card.standardisation["pt_inr"].sd == 0.3
    assert (tmp_path / f"{name}.card.json").is_file()


def test_full_model_hdf5_also_loads_by_topology_into_card_graph(tmp_path: Path) -> None:
    """The fallback for Keras 2 full-model files Keras 3 cannot rebuild (the authors' format)."""
    original = save_tiny(tmp_path / "authors_style.h5")
    rebuilt = _load_into_built(tmp_path / "authors_style.h5", tiny_card(tiny_spec()))
    x = _inputs()
    assert np.array_equal(np.asarray(original.predict_on_batch(x)), np.asarray(rebuilt.predict_on_batch(x)))


def test_full_model_taking_clinical_first_is_reordered(tmp_path: Path) -> None:
    """The paper does not say in which order the authors' model takes its two inputs."""
    built = build_model(tiny_spec())
    image_in = keras.Input(shape=TINY_SHAPE, name="image_in")
    clinical_in = keras.Input(shape=(5,), name="clinical_in")
    clinical_first = keras.Model([clinical_in, image_in], built([image_in, clinical_in]))
    save_model_with_card(clinical_first, tiny_card(tiny_spec()), tmp_path / "theirs.h5")
    loaded = load_model_with_card(tmp_path / "theirs.h5")
    x, c = _inputs()
    assert np.allclose(np.asarray(loaded.model.predict_on_batch([x, c])),
                       np.asarray(clinical_first.predict_on_batch([c, x])), atol=1e-6)
    assert "reordered" in loaded.load_method


def authors_multimodal_graph(spec: ModelSpec) -> keras.Model:
    """Multimodal CNN Model 2 written the way the authors' notebook writes it: inputs
    (clinical, image), the clinical branch first, he_normal, [clinical, image] fusion,
    Keras' own layer names. Only the sizes come from ``spec``."""
    clinical_in = keras.Input((spec.n_clinical,))
    image_in = keras.Input(spec.input_shape)
    t = clinical_in
    for units in spec.clinical_units:
        t = layers.Dense(units=units, kernel_initializer="he_normal")(t)
        t = layers.BatchNormalization()(t)
        t = layers.Activation("relu")(t)
        t = layers.Dropout(spec.dropout)(t)
    i = image_in
    for filters, kernel in zip(spec.filters, spec.kernels):
        i = layers.Conv3D(filters=filters, kernel_size=kernel, padding=spec.padding,
                          kernel_initializer="he_normal")(i)
        i = layers.BatchNormalization()(i)
        i = layers.Activation("relu")(i)
        i = layers.MaxPool3D(pool_size=2)(i)
    i = layers.GlobalAveragePooling3D()(i)
    i = layers.Dense(units=spec.dense_units, activation="relu", kernel_initializer="he_normal")(i)
    i = layers.Dropout(spec.dropout)(i)
    x = layers.concatenate([t, i])
    x = layers.Dense(units=spec.head_units, kernel_initializer="he_normal")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(spec.dropout)(x)
    out = layers.Dense(units=1, activation="sigmoid")(x)
    return keras.Model((clinical_in, image_in), out, name="multimodal")


def _distinct_weights(model: keras.Model, seed: int) -> None:
    """Every weight set to its own random values (BatchNorm variances positive), so a
    layer loaded into the wrong place changes the output."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        values = rng.normal(0.0, 0.3, weight.shape)
        if "variance" in weight.path:
            values = np.abs(values) + 0.5
        weight.assign(values.astype("float32"))


def _save_keras2_weights_only(model: keras.Model, path: Path) -> None:
    """A weights-only HDF5 file in the Keras 2 layout (``layer_names`` at the root, one
    group per layer, weights matched by layer order on loading): the ``model_weights``
    group of a legacy full-model file, moved to the root."""
    full = path.with_name("full-" + path.name)
    model.save(str(full))
    with h5py.File(full, "r") as source, h5py.File(path, "w") as target:
        group = source["model_weights"]
        for name in group:
            source.copy(group[name], target, name)
        for key, value in group.attrs.items():
            target.attrs[key] = value
    full.unlink()


@pytest.mark.parametrize("name", ["theirs.h5", "theirs.weights.h5"])
def test_weights_saved_from_the_authors_graph_load_by_layer_order(tmp_path: Path, name: str) -> None:
    """A weights-only file of the authors' graph (Keras 2-style .h5 or Keras 3 .weights.h5,
    both matched by layer order, not name) loads into ours and gives the same outputs."""
    spec = tiny_spec()
    theirs = authors_multimodal_graph(spec)
    _distinct_weights(theirs, seed=5)
    path = tmp_path / name
    if name.endswith(".weights.h5"):
        theirs.save_weights(str(path))
    else:
        _save_keras2_weights_only(theirs, path)
    write_model_card(tiny_card(spec), path)
    loaded = load_model_with_card(path)
    assert loaded.load_method.startswith("weights-only")
    x, c = _inputs()
    expected = np.asarray(theirs.predict_on_batch([c, x]))
    assert 0.01 < float(expected.min()) and float(expected.max()) < 0.99  # not saturated
    assert np.allclose(np.asarray(loaded.model.predict_on_batch([x, c])), expected, atol=1e-6)


def test_layer_order_is_the_authors() -> None:
    """Our weight-bearing layers, in Keras' order, have the shapes of theirs."""
    spec = tiny_spec()
    shapes = [[tuple(w.shape) for w in layer.weights] for model in (build_model(spec),
              authors_multimodal_graph(spec)) for layer in model.layers if layer.weights]
    half = len(shapes) // 2
    assert shapes[:half] == shapes[half:]


def test_missing_card_is_a_model_error(tmp_path: Path) -> None:
    save_tiny(tmp_path / "m.keras")
    (tmp_path / "m.keras.card.json").unlink()
    with pytest.raises(ModelError, match="no model card"):
        load_model_with_card(tmp_path / "m.keras")


@pytest.mark.parametrize("change, message", [
    ({"clinically_validated": "yes"}, "clinically_validated"),
    ({"origin": ""}, "origin"),
    ({"standardisation": {}}, "no standardisation"),
    ({"clinical_variables": ["pt_inr"]}, "clinical_variables"),
    ({"graph": {"colour": 1}}, "unknown keys"),
])
def test_invalid_card_is_a_model_error(tmp_path: Path, change: dict, message: str) -> None:
    save_tiny(tmp_path / "m.keras")
    card_path = tmp_path / "m.keras.card.json"
    card = json.loads(card_path.read_text())
    card.update(change)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=message):
        load_model_card(tmp_path / "m.keras")


def test_toml_card_is_read(tmp_path: Path) -> None:
    save_tiny(tmp_path / "m.keras")
    raw = json.loads((tmp_path / "m.keras.card.json").read_text())
    (tmp_path / "m.keras.card.json").unlink()
    lines = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    lines.append("[validation]")
    lines.append("[graph]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in raw["graph"].items()]
    for name, s in raw["standardisation"].items():
        lines += [f"[standardisation.{name}]", f"mean = {s['mean']}", f"sd = {s['sd']}"]
    (tmp_path / "m.keras.card.toml").write_text("\n".join(lines) + "\n")
    assert load_model_card(tmp_path / "m.keras") == tiny_card(tiny_spec())


def test_weights_not_matching_their_card_are_refused(tmp_path: Path) -> None:
    save_tiny(tmp_path / "m.keras", architecture="cnn_model2")
    card_path = tmp_path / "m.keras.card.json"
    card = json.loads(card_path.read_text())
    card["input_shape"] = [32, 32, 16, 1]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not match its card"):
        load_model_with_card(tmp_path / "m.keras")
