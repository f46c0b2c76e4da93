"""CNN Model 2 and Multimodal CNN Model 2 of Tanioka et al. 2024, in backend-agnostic Keras 3.

As in the authors' published notebooks (CNN_Model_2, Multimodal_Model_2), checked
layer by layer: four 3-D conv blocks, kernels 19x19x7, 19x19x7, 14x14x5, 11x11x4
(in-plane x in-plane x slices), filters 64, 64, 128, 256, each block Conv3D ->
BatchNorm -> ReLU -> MaxPool(2), "valid" padding (the 256 x 256 x 80 input leaves a
4 x 4 x 1 map); GlobalAveragePooling3D; Dense 512 + ReLU + Dropout 0.3; Dense 1 sigmoid
(34,534,849 parameters).

Multimodal CNN Model 2: the clinical branch is built first (Dense 512, Dense 256, each
Dense -> BN -> ReLU -> Dropout 0.3), then the image branch without its Dense(1) head
(it ends at the 512-unit dropout); they are concatenated as [clinical, image], then
Dense 256 (same pattern) and Dense(1, sigmoid) (34,869,953 parameters). Every Conv3D
and hidden Dense starts from ``he_normal``; the sigmoid heads keep Keras' default
(glorot uniform), as in the notebooks.

Why the order matters: a weights-only HDF5 file (or a full-model file whose graph Keras
3 cannot rebuild) loads by topology, i.e. weight-bearing layers matched in the order
Keras lists them, and Keras lists the two branches interleaved by depth. Building the
branches in the authors' order and concatenating in theirs gives the same list, so
their weights land on the right layers (tests/test_weights_roundtrip.py checks it
against a graph written as the notebook writes it). Our model takes its inputs as
[image, clinical] (the authors': [clinical, image]); the input order does not change
the layer order. The layer names below are our own, stable for the project's .keras
files.

``block_order = "conv_relu_pool_bn"`` (the Keras 3-D CT example's block) holds the same
weights in the same order; it exists for cards of weights trained that way, not for the
authors' weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import keras
from keras import layers

from domain.clinical import PREDICTOR_VARIABLES

PUBLISHED_KERNELS: tuple[tuple[int, int, int], ...] = ((19, 19, 7), (19, 19, 7), (14, 14, 5), (11, 11, 4))
PUBLISHED_FILTERS: tuple[int, ...] = (64, 64, 128, 256)
PUBLISHED_INPUT_SHAPE: tuple[int, int, int, int] = (256, 256, 80, 1)


Architecture = Literal["multimodal_cnn_model2", "cnn_model2"]
BlockOrder = Literal["conv_bn_relu_pool", "conv_relu_pool_bn"]
Padding = Literal["valid", "same"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes the model's graph; defaults are the published sizes."""

    architecture: Architecture = "multimodal_cnn_model2"
    input_shape: tuple[int, int, int, int] = PUBLISHED_INPUT_SHAPE
    filters: tuple[int, ...] = PUBLISHED_FILTERS
    kernels: tuple[tuple[int, int, int], ...] = PUBLISHED_KERNELS
    dense_units: int = 512
    clinical_units: tuple[int, int] = (512, 256)
    head_units: int = 256
    dropout: float = 0.3
    n_clinical: int = len(PREDICTOR_VARIABLES)
    block_order: BlockOrder = "conv_bn_relu_pool"
    # "valid" is published; "same" lets tiny test inputs keep four pooling steps.
    padding: Padding = "valid"

    def __post_init__(self) -> None:
        if len(self.filters) != len(self.kernels):
            raise ValueError("one filter count per kernel")
        if self.architecture not in ("multimodal_cnn_model2", "cnn_model2"):
            raise ValueError(f"unknown architecture {self.architecture!r}")
        if self.block_order not in ("conv_bn_relu_pool", "conv_relu_pool_bn"):
            raise ValueError(f"unknown block order {self.block_order!r}")
        if self.padding not in ("valid", "same"):
            raise ValueError(f"unknown padding {self.padding!r}")

    @property
    def multimodal(self) -> bool:
        return self.architecture == "multimodal_cnn_model2"


# The authors' initialiser for every Conv3D and hidden Dense layer.
_KERNEL_INITIALIZER = "he_normal"


def _conv_block(x: object, i: int, filters: int, kernel: tuple[int, int, int],
                order: BlockOrder, padding: Padding) -> object:
    conv = layers.Conv3D(filters, kernel, padding=padding, kernel_initializer=_KERNEL_INITIALIZER,
                         name=f"image_conv{i}")
    bn = layers.BatchNormalization(name=f"image_bn{i}")
    relu = layers.Activation("relu", name=f"image_relu{i}")
    pool = layers.MaxPooling3D(pool_size=2, name=f"image_pool{i}")
    steps = (conv, bn, relu, pool) if order == "conv_bn_relu_pool" else (conv, relu, pool, bn)
    for step in steps:
        x = step(x)
    return x


def _image_features(image: object, spec: ModelSpec) -> object:
    """The image branch up to the 512-unit dropout (shared by both models)."""
    x = image
    for i, (f, k) in enumerate(zip(spec.filters, spec.kernels), start=1):
        x = _conv_block(x, i, f, k, spec.block_order, spec.padding)
    x = layers.GlobalAveragePooling3D(name="image_gap")(x)
    x = layers.Dense(spec.dense_units, activation="relu", kernel_initializer=_KERNEL_INITIALIZER,
                     name="image_dense")(x)
    return layers.Dropout(spec.dropout, name="image_dropout")(x)


def _dense_block(x: object, units: int, name: str, dropout: float) -> object:
    x = layers.Dense(units, kernel_initializer=_KERNEL_INITIALIZER, name=f"{name}_dense")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.Dropout(dropout, name=f"{name}_dropout")(x)


def build_cnn_model2(spec: ModelSpec | None = None) -> keras.Model:
    """CNN Model 2: image only; input (H, W, slices, 1), output P(expansion)."""
    spec = spec or ModelSpec(architecture="cnn_model2")
    image = keras.Input(shape=spec.input_shape, name="image")
    x = _image_features(image, spec)
    out = layers.Dense(1, activation="sigmoid", name="expansion_probability")(x)
    return keras.Model(image, out, name="cnn_model2")


def build_multimodal_cnn_model2(spec: ModelSpec | None = None) -> keras.Model:
    """Multimodal CNN Model 2: inputs [image, 5 standardised clinical values].

    Layers are created in the authors' order (clinical branch, then image branch) and
    fused as [clinical, image], so weights saved from their graph load by topology.
    """
    spec = spec or ModelSpec()
    image = keras.Input(shape=spec.input_shape, name="image")
    clinical = keras.Input(shape=(spec.n_clinical,), name="clinical")
    c = _dense_block(clinical, spec.clinical_units[0], "clinical1", spec.dropout)
    c = _dense_block(c, spec.clinical_units[1], "clinical2", spec.dropout)
    img = _image_features(image, spec)
    x = layers.Concatenate(name="fusion_concat")([c, img])
    x = _dense_block(x, spec.head_units, "fusion", spec.dropout)
    out = layers.Dense(1, activation="sigmoid", name="expansion_probability")(x)
    return keras.Model([image, clinical], out, name="multimodal_cnn_model2")


def build_model(spec: ModelSpec) -> keras.Model:
    """The model ``spec`` describes."""
    return build_multimodal_cnn_model2(spec) if spec.multimodal else build_cnn_model2(spec)
