"""BLAST-CT's DeepMedic network (Monteiro et al. 2020) in backend-agnostic Keras 3.

A port of ``blast_ct.models.deepmedic.DeepMedic`` (blast-ct 2.1.0, unchanged since v1),
channels-last. Three pathways see the input at scales 5, 3 and 1 (in that order, as the
weights and the concatenation expect): each crops the centre it needs, subsamples it
(every s-th voxel from s // 2), runs 8 pre-activation blocks (BatchNorm, PReLU with one
shared slope, 3x3x3 valid convolution without bias, plus the input cropped by one voxel
when the channel counts match), repeats each voxel s times per axis and crops the centre
to the output size. The 150 concatenated channels pass three 1x1x1 blocks (150 -> 250 ->
250 -> 5, the middle one residual) and a softmax over the classes.

Every input size a multiple of 5 from 85 up is valid; the output is 80 voxels smaller per
axis. Outputs at a tile start that is a multiple of 15 voxels (3 x 5) line up with
BLAST-CT's own 30-voxel tiles, so larger tiles give the same voxels (see tiling.py).
"""

from __future__ import annotations

import math

import keras
from keras import layers

SCALE_FACTORS: tuple[int, ...] = (5, 3, 1)
FEATURE_MAPS: tuple[int, ...] = (30, 30, 40, 40, 40, 40, 50, 50)
FULLY_CONNECTED: tuple[int, ...] = (250, 250)
CLASS_NAMES: tuple[str, ...] = ("background", "intraparenchymal", "extra_axial",
                                "perilesional_oedema", "intraventricular")
BN_EPSILON = 1e-5
CONTEXT = 40  # voxels of input needed on each side of an output tile
TILE_ALIGNMENT = 15  # output tiles start at multiples of this to line up the coarse grids

Size = tuple[int, int, int]


def output_size(input_size: Size) -> Size:
    """The output size for ``input_size``; ValueError when BLAST-CT would refuse it.

    As in blast-ct, the coarsest pathway decides: (i - 5) // 5 + 1 - 16 coarse voxels,
    times 5; an input that is not exactly what that output needs is refused.
    """
    scale = SCALE_FACTORS[0]
    depth = 2 * len(FEATURE_MAPS)
    out = tuple(((i - scale) // scale + 1 - depth) * scale for i in input_size)
    if any(o <= 0 for o in out) or input_size_for(out) != tuple(input_size):  # type: ignore[arg-type]
        raise ValueError(f"input size {input_size} is not valid for DeepMedic: each axis must be a "
                         f"multiple of 5 and at least 85")
    return out  # type: ignore[return-value]


def input_size_for(out: Size) -> Size:
    """The input size whose output is ``out`` (each axis a multiple of 5)."""
    return tuple(_path_input(o, SCALE_FACTORS[0]) for o in out)  # type: ignore[return-value]


def _path_input(out: int, scale: int) -> int:
    """Input length one pathway needs for ``out`` output voxels (blast-ct's calculate_input_size)."""
    return (math.ceil(out / scale) + 2 * len(FEATURE_MAPS)) * scale


def _crop_centre(x: keras.KerasTensor, size: Size) -> keras.KerasTensor:
    """blast-ct's crop_center: start c // 2 - s // 2 along each spatial axis."""
    have = tuple(int(d) for d in x.shape[1:4])
    if have == size:
        return x
    starts = [c // 2 - s // 2 for c, s in zip(have, size)]
    return x[:, starts[0]:starts[0] + size[0], starts[1]:starts[1] + size[1],
             starts[2]:starts[2] + size[2], :]


def _preact_block(x: keras.KerasTensor, filters: int, kernel: int, name: str) -> keras.KerasTensor:
    out = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    out = layers.PReLU(shared_axes=[1, 2, 3, 4], name=f"{name}_prelu")(out)
    out = layers.Conv3D(filters, kernel, padding="valid", use_bias=False, name=f"{name}_conv")(out)
    if int(x.shape[-1]) == filters:
        crop = kernel // 2
        shortcut = layers.Cropping3D(crop, name=f"{name}_shortcut")(x) if crop else x
        out = layers.Add(name=f"{name}_add")([out, shortcut])
    return out


def _pathway(image: keras.KerasTensor, scale: int, out: Size | None) -> keras.KerasTensor:
    name = f"path{scale}"
    if out is None:
        # Tiles (output a multiple of 15): the pathway needs out + 16 x scale voxels, the
        # centre of the out + 80 it gets, and its upsampled output is exactly out.
        margin = CONTEXT - len(FEATURE_MAPS) * scale
        x = image[:, margin:-margin, margin:-margin, margin:-margin, :] if margin else image
    else:
        x = _crop_centre(image, tuple(_path_input(o, scale) for o in out))  # type: ignore[arg-type]
    if scale > 1:
        first = scale // 2
        x = x[:, first::scale, first::scale, first::scale, :]
    for index, filters in enumerate(FEATURE_MAPS, start=1):
        x = _preact_block(x, filters, 3, f"{name}_block{index}")
    if scale > 1:
        x = layers.UpSampling3D(scale, name=f"{name}_upsample")(x)
    return x if out is None else _crop_centre(x, out)


def build_deepmedic(input_size: Size | None, num_classes: int = len(CLASS_NAMES)) -> keras.Model:
    """The network for inputs of ``input_size`` voxels, (batch, z, y, x, 1) -> class probabilities.

    ``input_size`` None gives one network for every tile whose output size is a multiple
    of 15 per axis (input = output + 80), so tiles of several sizes share it. Layer names
    are the same for every input size, so one weight file fits all.
    """
    out = None if input_size is None else output_size(input_size)
    image = keras.Input(shape=(*(input_size or (None, None, None)), 1), name="image")
    x = layers.Concatenate(name="concatenate")([_pathway(image, s, out) for s in SCALE_FACTORS])
    for index, filters in enumerate((*FULLY_CONNECTED, num_classes)):
        x = _preact_block(x, filters, 1, f"fc{index}")
    probabilities = layers.Softmax(axis=-1, name="softmax")(x)
    return keras.Model(image, probabilities, name="blast_ct_deepmedic")
