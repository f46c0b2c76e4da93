"""Geometry of the blast-ct method without the network: orientation, 1 mm resampling with
blast-ct's (SimpleITK's) rules, labels back to the CT grid, the intracranial box, tiling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from domain.imaging import CTVolume
from inference.masking.blast_ct.grid import (
    grid_1mm_shape,
    labels_to_ct,
    orientation_of,
    resample_to_1mm,
    window,
)
from inference.masking.blast_ct.intracranial_box import intracranial_box
from inference.masking.blast_ct.network import TILE_ALIGNMENT
from inference.masking.blast_ct.tiling import multiply_adds, plan_tiles
from tests.support.phantoms import HEAD_RADII_MM, SCALP_MM, SKULL_MM, head_hu

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database


def _volume(shape: tuple[int, int, int], affine: np.ndarray, spacing: tuple[float, float, float]) -> CTVolume:
    hu = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    return CTVolume(hu, affine, spacing, tuple(str(i) for i in range(shape[0])), "1", "2")


def test_orientation_brings_any_axis_order_to_superior_posterior_left() -> None:
    # Slices along x running right (negative), rows along z, columns along y: a sagittal stack.
    affine = np.zeros((4, 4))
    affine[0, 0], affine[2, 1], affine[1, 2], affine[3, 3] = -2.0, 0.5, 0.7, 1.0
    volume = _volume((4, 5, 6), affine, (2.0, 0.5, 0.7))
    orientation = orientation_of(volume)
    assert orientation.order == (1, 2, 0)
    assert orientation.flipped == (False, False, True)
    assert orientation.spacing_mm == (0.5, 0.7, 2.0)
    network = orientation.to_network(volume.hu)
    assert network.shape == (5, 6, 4)
    assert network[0, 0, 0] == volume.hu[3, 0, 0]  # leftmost slice first
    np.testing.assert_array_equal(orientation.to_ct(network), volume.hu)


def _itk_linear(array: np.ndarray, spacing: tuple[float, float, float], point: tuple[int, ...]) -> float:
    """One 1 mm grid point the way SimpleITK's linear interpolator gives it (slow, exact)."""
    position = [k / s for k, s in zip(point, spacing)]
    if any(p >= n - 0.5 for p, n in zip(position, array.shape)):
        return float(array.min())
    value = 0.0
    for corner in np.ndindex(2, 2, 2):
        weight, index = 1.0, []
        for p, c, n in zip(position, corner, array.shape):
            base = min(math.floor(p), n - 1)
            frac = p - base
            weight *= frac if c else 1 - frac
            index.append(min(base + c, n - 1))
        value += weight * float(array[tuple(index)])
    return value


def test_resampling_follows_simpleitk_rules() -> None:
    rng = np.random.default_rng(5)
    array = rng.normal(30, 20, (7, 9, 7)).astype(np.float32)
    spacing = (2.5, 0.8, 0.45)   # 0.45 mm: the last 1 mm point lies > half a voxel past the end
    grid = grid_1mm_shape(array.shape, spacing)  # type: ignore[arg-type]
    assert grid == (16, 7, 4)
    start, stop = (-3, -2, 0), (18, 9, 5)   # beyond the grid on every side: edge voxels repeat
    out = resample_to_1mm(array, spacing, start, stop)
    assert out.shape == (21, 11, 5) and out.dtype == np.float32
    for index in np.ndindex(out.shape):
        point = tuple(min(max(a + i, 0), m - 1) for a, i, m in zip(start, index, grid))
        assert out[index] == pytest.approx(_itk_linear(array, spacing, point), abs=1e-3), index


def test_window_maps_minus_15_to_100_hu_onto_minus_1_to_1() -> None:
    np.testing.assert_allclose(window(np.array([-1000, -15, 42.5, 100, 1000], np.float32)),
                               [-1, -1, 0, 1, 1])


def test_labels_go_back_by_nearest_neighbour_rounding_half_up() -> None:
    labels = np.arange(1, 8, dtype=np.uint8).reshape(7, 1, 1)   # 1 mm voxels 0..6 along z
    ct = labels_to_ct(labels, (0, 0, 0), (3, 1, 1), (2.5, 1.0, 1.0))
    # CT slices at 0, 2.5 and 5 mm take 1 mm voxels 0, 3 (2.5 rounds up) and 5.
    assert ct.ravel().tolist() == [1, 4, 6]
    shifted = labels_to_ct(labels[:2], (3, 0, 0), (3, 1, 1), (2.5, 1.0, 1.0))
    assert shifted.ravel().tolist() == [0, 1, 0]   # outside the labelled box: background


def test_intracranial_box_holds_the_intracranial_space_and_little_else() -> None:
    slice_mm, pixel_mm = 5.0, 0.9
    hu, _ = head_hu(40, 256, pixel_mm, slice_mm, None, (0.0, 0.0, 0.0), None, 4.0, seed=2)
    start, stop = intracranial_box(hu, (slice_mm, pixel_mm, pixel_mm), margin_mm=5.0)
    grid = grid_1mm_shape(hu.shape, (slice_mm, pixel_mm, pixel_mm))  # type: ignore[arg-type]
    centre = [(n - 1) / 2 for n in grid]
    inner = [r - SCALP_MM - SKULL_MM for r in HEAD_RADII_MM]   # x, y, z half-axes in mm
    for axis, radius in zip(range(3), (min(inner[2], (grid[0] - 1) / 2), inner[1], inner[0])):
        assert start[axis] <= centre[axis] - radius + 1 and stop[axis] >= centre[axis] + radius
        assert start[axis] >= centre[axis] - radius - 16 or start[axis] == 0
        assert stop[axis] <= centre[axis] + radius + 17 or stop[axis] == grid[axis]
    assert start[1] > 0 and start[2] > 0   # air, scalp and skull left out in-plane


def test_intracranial_box_falls_back_to_the_whole_grid() -> None:
    air = np.full((10, 30, 30), -1000.0, np.float32)
    assert intracranial_box(air, (1.0, 1.0, 1.0), 5.0) == ((0, 0, 0), (10, 30, 30))


def test_tiles_are_aligned_cover_the_box_once_and_respect_the_cap() -> None:
    box_start, box_stop = (7, 20, 33), (150, 190, 170)
    plan = plan_tiles(box_start, box_stop, max_tile_voxels=75 ** 3)
    assert all(a % TILE_ALIGNMENT == 0 for a in plan.start)
    assert all(t % TILE_ALIGNMENT == 0 for lengths in plan.segments for t in lengths)
    # The box rounded out to multiples of 15, no more.
    assert all(a <= b < a + TILE_ALIGNMENT for a, b in zip(plan.start, box_start))
    assert all(b <= s < b + TILE_ALIGNMENT for s, b in zip(plan.stop, box_stop))
    cover = np.zeros(plan.size, np.uint8)
    for (z, y, x), (dz, dy, dx) in plan.tiles():
        assert dz * dy * dx <= 75 ** 3
        cover[z:z + dz, y:y + dy, x:x + dx] += 1
    assert (cover == 1).all()
    # Bigger tiles waste less on the valid convolutions' borders.
    assert multiply_adds((60, 60, 60)) / 60 ** 3 < multiply_adds((30, 30, 30)) / 30 ** 3
