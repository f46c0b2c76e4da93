"""Architecture of CNN Model 2 and Multimodal CNN Model 2 (published sizes and tiny ones)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.tanioka_models import (
    PUBLISHED_KERNELS,
    ModelSpec,
    build_cnn_model2,
    build_multimodal_cnn_model2,
)
from tests.support.tiny_expansion_model import TINY_SHAPE, tiny_spec

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database


def test_published_cnn_model2_has_34_5_million_parameters() -> None:
    model = build_cnn_model2()
    assert model.count_params() == 34_534_849  # the authors' ~34.5 M
    assert tuple(model.inputs[0].shape) == (None, 256, 256, 80, 1)
    assert tuple(model.outputs[0].shape) == (None, 1)
    kernels = [tuple(model.get_layer(f"image_conv{i}").kernel_size) for i in range(1, 5)]
    filters = [model.get_layer(f"image_conv{i}").filters for i in range(1, 5)]
    assert kernels == list(PUBLISHED_KERNELS) and filters == [64, 64, 128, 256]
    # valid padding + four poolings: 256x256x80 -> 4x4x1 before global pooling
    assert tuple(model.get_layer("image_pool4").output.shape) == (None, 4, 4, 1, 256)
    assert model.get_layer("image_dropout").rate == 0.3


def test_published_multimodal_model2_inputs_and_fusion() -> None:
    model = build_multimodal_cnn_model2()
    assert [tuple(t.shape) for t in model.inputs] == [(None, 256, 256, 80, 1), (None, 5)]
    assert tuple(model.get_layer("fusion_concat").output.shape) == (None, 512 + 256)
    assert model.get_layer("clinical1_dense").units == 512
    assert model.get_layer("clinical2_dense").units == 256
    assert model.get_layer("fusion_dense").units == 256
    # image branch without its Dense(1) head (34,534,849 - 513) + clinical + fusion
    assert model.count_params() == 34_534_336 + 3_072 + 2_048 + 131_328 + 1_024 + 196_864 + 1_024 + 257


def test_tiny_models_run_and_output_probabilities() -> None:
    x = np.random.default_rng(0).random((3, *TINY_SHAPE), dtype=np.float32)
    c = np.zeros((3, 5), np.float32)
    p_img = np.asarray(build_cnn_model2(tiny_spec("cnn_model2")).predict_on_batch(x))
    p_mm = np.asarray(build_multimodal_cnn_model2(tiny_spec()).predict_on_batch([x, c]))
    for p in (p_img, p_mm):
        assert p.shape == (3, 1) and np.all((p > 0) & (p < 1))


def test_block_order_changes_the_graph_not_the_weights() -> None:
    a = build_cnn_model2(ModelSpec(architecture="cnn_model2", input_shape=TINY_SHAPE, filters=(2, 2, 2, 2),
                                   kernels=((3, 3, 3),) * 4, padding="same", dense_units=8))
    b = build_cnn_model2(ModelSpec(architecture="cnn_model2", input_shape=TINY_SHAPE, filters=(2, 2, 2, 2),
                                   kernels=((3, 3, 3),) * 4, padding="same", dense_units=8,
                                   block_order="conv_relu_pool_bn"))
    assert [w.shape for w in a.weights] == [w.shape for w in b.weights]
    order_a = [l.name for l in a.layers][1:5]
    order_b = [l.name for l in b.layers][1:5]
    assert order_a == ["image_conv1", "image_bn1", "image_relu1", "image_pool1"]
    assert order_b == ["image_conv1", "image_relu1", "image_pool1", "image_bn1"]
