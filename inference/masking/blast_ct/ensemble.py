"""Running ensemble members over a prepared CT's tiles: summed class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import keras
import numpy as np

from inference.masking.blast_ct.network import CLASS_NAMES, build_deepmedic
from inference.masking.blast_ct.preparation import PreparedCt
from inference.masking.blast_ct.tiling import input_size
from inference.masking.blast_ct.weight_files import EnsembleMember


class EnsembleRunner:
    """One network for every tile size, on one device; runs members on it."""

    def __init__(self, device: str, tiles_per_batch: int) -> None:
        self.device = device
        self.tiles_per_batch = tiles_per_batch
        with keras.device(device):
            self._network = build_deepmedic(None)

    def probability_sum(self, prepared: PreparedCt, members: Sequence[EnsembleMember]) -> np.ndarray:
        """Sum over ``members`` of the class probabilities on the plan's region (z, y, x, class).

        Summed in member order, as blast-ct does; argmax of the sum is argmax of the mean.
        """
        total = np.zeros((*prepared.plan.size, len(CLASS_NAMES)), np.float32)
        by_shape = [(shape, [offset for offset, _ in group]) for shape, group in
                    groupby(sorted(prepared.plan.tiles(), key=lambda t: t[1]), key=lambda t: t[1])]
        with keras.device(self.device):
            for member in members:
                member.apply_to(self._network)
                for shape, offsets in by_shape:
                    for first in range(0, len(offsets), self.tiles_per_batch):
                        self._run_batch(prepared.image, shape, offsets[first:first + self.tiles_per_batch], total)
        return total

    def _run_batch(self, image: np.ndarray, tile: tuple[int, int, int],
                   offsets: list[tuple[int, int, int]], total: np.ndarray) -> None:
        size = input_size(tile)
        # Always tiles_per_batch tiles, so that a batch shape seen once is not traced again.
        batch = np.zeros((self.tiles_per_batch, *size, 1), np.float32)
        for slot, o in enumerate(offsets):
            batch[slot, ..., 0] = image[o[0]:o[0] + size[0], o[1]:o[1] + size[1], o[2]:o[2] + size[2]]
        probabilities = np.asarray(self._network.predict_on_batch(batch))
        for o, p in zip(offsets, probabilities):
            total[o[0]:o[0] + tile[0], o[1]:o[1] + tile[1], o[2]:o[2] + tile[2]] += p
