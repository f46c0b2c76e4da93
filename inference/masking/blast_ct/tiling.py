"""Tiles of the 1 mm grid that give exactly the voxels of blast-ct's own 30-voxel tiling.

blast-ct cuts the 1 mm image into output tiles of 30 voxels from voxel 0 and runs the
network on each with 40 voxels of context per side (input 110), padding with the edge
value past the image. The network's coarse pathways see every 5th and 3rd voxel; with
tiles that start at multiples of 15 those samples fall on the same voxels as in
blast-ct's tiles, and each output voxel sees the same input, so any tile size that is a
multiple of 15 gives the same result (checked against blast-ct in the tests). Larger
tiles waste less on the valid convolutions' borders; their size is chosen here by a
cost model of multiply-adds under a memory cap.
"""

from __future__ import annotations

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
    """Output tiles of ``tile`` voxels covering [start, start + tile x counts) of the 1 mm grid."""

    start: Triple
    tile: Triple
    counts: Triple

    @property
    def stop(self) -> Triple:
        return tuple(a + t * n for a, t, n in zip(self.start, self.tile, self.counts))  # type: ignore[return-value]

    @property
    def size(self) -> Triple:
        return tuple(t * n for t, n in zip(self.tile, self.counts))  # type: ignore[return-value]

    @property
    def input_tile(self) -> Triple:
        return tuple(t + 2 * CONTEXT for t in self.tile)  # type: ignore[return-value]

    def offsets(self) -> list[Triple]:
        """Each tile's first output voxel, relative to ``start``."""
        return [tuple(i * t for i, t in zip(index, self.tile))  # type: ignore[misc]
                for index in itertools.product(*(range(n) for n in self.counts))]


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


def plan_tiles(box_start: Triple, box_stop: Triple, max_tile_voxels: int) -> TilePlan:
    """The cheapest tiling of [box_start, box_stop) (1 mm voxels) with tiles of at most
    ``max_tile_voxels`` output voxels, each edge a multiple of 15, aligned to 15."""
    start = tuple(a - a % TILE_ALIGNMENT for a in box_start)
    lengths = [b - a for a, b in zip(start, box_stop)]
    if min(lengths) <= 0:
        raise ValueError(f"empty box {box_start}..{box_stop}")
    best: tuple[float, TilePlan] | None = None
    for counts in itertools.product(range(1, _MAX_TILES_PER_AXIS + 1), repeat=3):
        tile = tuple(TILE_ALIGNMENT * math.ceil(n / c / TILE_ALIGNMENT) for n, c in zip(lengths, counts))
        if math.prod(tile) > max_tile_voxels:
            continue
        if any(t * (c - 1) >= n for t, c, n in zip(tile, counts, lengths)):
            continue  # a tile would lie wholly outside the box
        cost = multiply_adds(tile) * math.prod(counts)  # type: ignore[arg-type]
        if best is None or cost < best[0]:
            best = (cost, TilePlan(start, tile, counts))  # type: ignore[arg-type]
    if best is None:
        raise ValueError(f"max_tile_voxels {max_tile_voxels} is below the smallest tile (15^3)")
    return best[1]
