"""Running ensemble members over a prepared CT's tiles: summed class probabilities."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import keras
import numpy as np

from inference.masking.blast_ct.network import CLASS_NAMES, build_deepmedic
from inference.masking.blast_ct.preparation import PreparedCt
from inference.masking.blast_ct.weight_files import EnsembleMember

_CACHED_NETWORKS = 3


class EnsembleRunner:
    """Holds one network per tile size on one device and runs members on it."""

    def __init__(self, device: str, tiles_per_batch: int) -> None:
        self.device = device
        self.tiles_per_batch = tiles_per_batch
        self._networks: OrderedDict[tuple[int, int, int], keras.Model] = OrderedDict()

    def probability_sum(self, prepared: PreparedCt, members: Sequence[EnsembleMember]) -> np.ndarray:
        """Sum over ``members`` of the class probabilities on the plan's region (z, y, x, class).

        Summed in member order, as blast-ct does; argmax of the sum is argmax of the mean.
        """
        plan = prepared.plan
        network = self._network(plan.input_tile)
        total = np.zeros((*plan.size, len(CLASS_NAMES)), np.float32)
        offsets = plan.offsets()
        size, tile = plan.input_tile, plan.tile
        with keras.device(self.device):
            for member in members:
                member.apply_to(network)
                for first in range(0, len(offsets), self.tiles_per_batch):
                    group = offsets[first:first + self.tiles_per_batch]
                    batch = np.zeros((self.tiles_per_batch, *size, 1), np.float32)
                    for slot, o in enumerate(group):  # same batch shape every call: no retracing
                        batch[slot, ..., 0] = prepared.image[o[0]:o[0] + size[0], o[1]:o[1] + size[1],
                                                             o[2]:o[2] + size[2]]
                    probabilities = np.asarray(network.predict_on_batch(batch))
                    for o, p in zip(group, probabilities):
                        total[o[0]:o[0] + tile[0], o[1]:o[1] + tile[1], o[2]:o[2] + tile[2]] += p
        return total

    def _network(self, input_tile: tuple[int, int, int]) -> keras.Model:
        """The network for tiles of this size, built once and kept (a few sizes recur)."""
        if input_tile in self._networks:
            self._networks.move_to_end(input_tile)
            return self._networks[input_tile]
        with keras.device(self.device):
            network = build_deepmedic(input_tile)
        self._networks[input_tile] = network
        if len(self._networks) > _CACHED_NETWORKS:
            self._networks.popitem(last=False)
        return network
