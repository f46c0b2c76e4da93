"""Masking method ``blast-ct``: BLAST-CT v1's ensemble labels each kind of blood.

For each CT: reorient to the network's axes, find the intracranial box, resample that
box (plus 40 mm of context) to 1 mm, window to -15..100 HU, run each ensemble member
over tiles that reproduce blast-ct's own tiling, average the members' class
probabilities, take the most probable class per voxel and bring the labels back to the
CT grid by nearest neighbour. The hematoma mask is the intraparenchymal class; the
intraventricular, extra-axial and oedema classes come with it.

The weights were trained on traumatic brain injury and are not validated on spontaneous
intracerebral hemorrhage: every mask carries that in its notes, for the report.
"""

from __future__ import annotations

import logging
import time

import keras
import numpy as np

from domain.errors import ModelError
from domain.imaging import CTVolume, HematomaMask
from inference.expansion_predictor import gpu_available
from inference.masking.blast_ct.ensemble import EnsembleRunner
from inference.masking.blast_ct.preparation import prepare
from inference.masking.blast_ct.weight_files import (
    ENSEMBLE_SIZE,
    WEIGHTS_DIR,
    EnsembleMember,
    load_member,
)
from inference.parameters import BlastCtParameters

log = logging.getLogger("hemex.inference")

METHOD_NAME = "blast-ct"
PORT_VERSION = "1.0"
# Members run by default on a CPU: bench/bench_blast_ct.py found that three fit the
# 2 minutes a study's masking may take on 2 idle cores (about 30 s per member for a
# head), and of the 220 triples this one agreed best with all 12 on the fixture
# volumes (docs/masking.md gives the figures and what it costs against all 12).
CPU_DEFAULT_ENSEMBLE: tuple[int, ...] = (8, 10, 11)
GPU_DEFAULT_ENSEMBLE: tuple[int, ...] = tuple(range(1, ENSEMBLE_SIZE + 1))
IPH, EAH, OEDEMA, IVH = 1, 2, 3, 4


def _resolve_device(choice: str) -> str:
    has_gpu = gpu_available()
    if choice == "gpu" and not has_gpu:
        raise ModelError(f"blast-ct device = 'gpu' but the {keras.backend.backend()} backend sees no GPU")
    return "gpu:0" if has_gpu and choice != "cpu" else "cpu:0"


class BlastCtMasker:
    """Implements ``HematomaMasker`` with BLAST-CT's ensemble, loaded once."""

    name = METHOD_NAME

    def __init__(self, parameters: BlastCtParameters | None = None) -> None:
        self.parameters = parameters or BlastCtParameters()
        self.device = _resolve_device(self.parameters.device)
        members = self.parameters.ensemble or (
            GPU_DEFAULT_ENSEMBLE if self.device.startswith("gpu") else CPU_DEFAULT_ENSEMBLE)
        self.members: tuple[EnsembleMember, ...] = tuple(
            load_member(m, self.parameters.weights_dir or WEIGHTS_DIR) for m in members)
        numbers = ",".join(str(m.number) for m in self.members)
        self.version = f"{self.members[0].card.model_version}+hemex.{PORT_VERSION} models {numbers}"
        self._runner = EnsembleRunner(self.device, self.parameters.tiles_per_batch)
        log.info("event=masker_loaded method=%s version=%r device=%s backend=%s", self.name,
                 self.version, self.device, keras.backend.backend())

    def notes(self) -> tuple[str, ...]:
        """What a report must say about the model behind the masks."""
        card = self.members[0].card
        return ((f"{card.model_name} {card.model_version} ({card.licence}), ensemble of "
                 f"{len(self.members)} of {ENSEMBLE_SIZE} models on {self.device}; port {PORT_VERSION}"),
                f"reference: {card.citation}",
                f"training data: {card.training_data}",
                f"validation: {card.validation}",
                "clinically validated: no")

    def segment(self, volume: CTVolume) -> HematomaMask:
        """Per-class masks of ``volume``; ``mask`` is the intraparenchymal hemorrhage."""
        labels = self.labels(volume)
        return HematomaMask(mask=labels == IPH, method_name=self.name, method_version=self.version,
                            intraventricular=labels == IVH, extra_axial=labels == EAH,
                            perilesional_oedema=labels == OEDEMA, learned=True, notes=self.notes())

    def labels(self, volume: CTVolume) -> np.ndarray:
        """Class index per CT voxel (0 background, 1 IPH, 2 EAH, 3 oedema, 4 IVH), uint8."""
        started = time.perf_counter()
        p = self.parameters
        prepared = prepare(volume, restrict_to_intracranial_box=p.intracranial_box,
                           box_margin_mm=p.box_margin_mm, max_tile_voxels=p.max_tile_voxels)
        total = self._runner.probability_sum(prepared, self.members)
        labels = prepared.labels_on_ct(np.argmax(total, axis=-1).astype(np.uint8))
        log.info("event=masking method=%s version=%r box=%s..%s tiles=%d seconds=%.1f",
                 self.name, self.version, prepared.box[0], prepared.box[1], len(prepared.plan.tiles()),
                 time.perf_counter() - started)
        return labels
