"""Tiles of the 1 mm grid that give exactly the voxels of blast-ct's own 30-voxel tiling.

blast-ct cuts the 1 mm image into output tiles of 30 voxels from voxel 0 and runs the
network on each with 40 voxels of context per side (input 110), padding with the edge
value past the image. The network's coarse pathways see every 5th and 3rd voxel; with
tiles that start at multiples of 15 those samples fall on the same voxels as in
blast-ct's tiles, and each output voxel sees the same input, so any tile size that is a
multiple of 15 gives the same result (checked against blast-ct in the tests), and tiles
of different sizes can share one network. Larger tiles waste less on the valid
convolutions' borders; their sizes are chosen here by a cost model of multiply-adds
under a memory cap.
"""

from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass

from inference.masking.blast_ct.network import (
    CONTEXT,
    FEATURE_MAPS,
    FULLY_CONNECTED,
    SCALE_FACTORS,
    TILE_ALIGNMENT,
)

Triple = tuple[int, int, int]
_MAX_TILES_PER_AXIS = 12


@dataclass(frozen=True)
class TilePlan:
    """Output tiles covering [start, stop) of the 1 mm grid: along each axis, tiles of the
    lengths in ``segments`` (multiples of 15) one after the other from ``start``."""

    start: Triple
    segments: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    @property
    def size(self) -> Triple:
        return tuple(sum(lengths) for lengths in self.segments)  # type: ignore[return-value]

    @property
    def stop(self) -> Triple:
        return tuple(a + n for a, n in zip(self.start, self.size))  # type: ignore[return-value]

    def tiles(self) -> list[tuple[Triple, Triple]]:
        """(first output voxel relative to ``start``, output size) of every tile."""
        per_axis = [list(zip(itertools.accumulate(lengths, initial=0), lengths)) for lengths in self.segments]
        return [((z[0], y[0], x[0]), (z[1], y[1], x[1])) for z, y, x in itertools.product(*per_axis)]


def input_size(tile: Triple) -> Triple:
    """The network input a tile of ``tile`` output voxels needs (CONTEXT on every side)."""
    return tuple(t + 2 * CONTEXT for t in tile)  # type: ignore[return-value]


def multiply_adds(tile: Triple) -> float:
    """Multiply-adds of one tile: valid 3x3x3 convolutions on each pathway's shrinking
    grid (coarse grids 1/s^3 as many voxels) plus the 1x1x1 blocks on the output."""
    total = 0.0
    for scale in SCALE_FACTORS:
        coarse = [math.ceil(t / scale) for t in tile]
        channels = (1, *FEATURE_MAPS)
        for block in range(len(FEATURE_MAPS)):
            border = 2 * (len(FEATURE_MAPS) - block - 1)
            voxels = math.prod(c + border for c in coarse)
            total += voxels * 27 * channels[block] * channels[block + 1]
    widths = (len(SCALE_FACTORS) * FEATURE_MAPS[-1], *FULLY_CONNECTED, 5)
    total += math.prod(tile) * sum(a * b for a, b in itertools.pairwise(widths))
    return total


def _split(length: int, count: int) -> tuple[int, ...]:
    """``length`` (a multiple of 15) in ``count`` multiples of 15 as equal as can be, larger first."""
    units, extra = divmod(length // TILE_ALIGNMENT, count)
    return tuple(TILE_ALIGNMENT * (units + (1 if i < extra else 0)) for i in range(count))


def plan_tiles(box_start: Triple, box_stop: Triple, max_tile_voxels: int) -> TilePlan:
    """The cheapest tiling of [box_start, box_stop) (1 mm voxels) with tiles of at most
    ``max_tile_voxels`` output voxels, each edge a multiple of 15, aligned to 15: the
    box rounded out to multiples of 15 and cut into nearly equal tiles per axis."""
    start = tuple(a - a % TILE_ALIGNMENT for a in box_start)
    lengths = [TILE_ALIGNMENT * math.ceil((b - a) / TILE_ALIGNMENT) for a, b in zip(start, box_stop)]
    if min(lengths) <= 0:
        raise ValueError(f"empty box {box_start}..{box_stop}")
    best: tuple[float, TilePlan] | None = None
    choices = [range(1, min(_MAX_TILES_PER_AXIS, n // TILE_ALIGNMENT) + 1) for n in lengths]
    for counts in itertools.product(*choices):
        segments = tuple(_split(n, c) for n, c in zip(lengths, counts))
        if math.prod(axis[0] for axis in segments) > max_tile_voxels:
            continue
        # Tiles have at most two lengths per axis: cost each distinct shape once.
        cost = 0.0
        for shape in itertools.product(*(collections.Counter(axis).items() for axis in segments)):
            tile: Triple = tuple(t for t, _ in shape)  # type: ignore[assignment]
            cost += multiply_adds(tile) * math.prod(n for _, n in shape)
        if best is None or cost < best[0]:
            best = (cost, TilePlan(start, segments))  # type: ignore[arg-type]
    if best is None:
        raise ValueError(f"max_tile_voxels {max_tile_voxels} is below the smallest tile (15^3)")
    return best[1]
