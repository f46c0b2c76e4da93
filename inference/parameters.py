"""The parameters of each inference step, as plain frozen dataclasses that check themselves.

The daemon's configuration embeds them (``[volume]``, ``[masking.threshold]``) or adapts
its own settings to them, so ``inference/`` never reads the daemon's configuration and
can be used (trained, tested, benchmarked) without it. This module imports nothing heavy:
the configuration loads it on every ``hemex`` command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# An unknown key in a config section embedding one of these is an error, not ignored.
_FORBID_EXTRA = {"extra": "forbid"}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class GeometryLimits:
    """Checks on the geometry of a series before its voxels are trusted.

    ``max_gantry_tilt_deg``: largest gantry tilt corrected (angle between the slice
    stacking direction and the image plane's normal); a series tilted further is
    refused. Scanners tilt their gantry up to about 30 degrees. ``slice_spacing_tolerance``:
    largest deviation of a slice gap from the median gap, as a fraction of it.
    """

    __pydantic_config__ = _FORBID_EXTRA

    max_gantry_tilt_deg: float = 30.0
    slice_spacing_tolerance: float = 0.05

    def __post_init__(self) -> None:
        _require(0 <= self.max_gantry_tilt_deg <= 60, "max_gantry_tilt_deg must lie in [0, 60]")
        _require(0 < self.slice_spacing_tolerance < 1, "slice_spacing_tolerance must lie in (0, 1)")


@dataclass(frozen=True)
class ThresholdParameters:
    """The training-free ``hemex-threshold`` masking method (docs/masking.md).

    Acute clotted blood lies at about 50-90 HU, grey matter at 35-45 HU.
    """

    __pydantic_config__ = _FORBID_EXTRA

    blood_hu_min: float = 50.0
    blood_hu_max: float = 90.0
    # Voxels up to rim_voxels from a kept hematoma join it when their unsmoothed HU is in
    # the blood range (the rim that smoothing blurred with surrounding oedema); 0 = off.
    rim_voxels: int = 1
    # Blood components smaller than this are noise.
    min_component_ml: float = 0.5
    # Gaussian smoothing before thresholding (noise would push grey matter into the range).
    smoothing_sigma_mm: float = 0.8
    # Bone: above this HU. The intracranial space is the soft tissue it encloses.
    bone_hu: float = 250.0
    # Opening radius that cuts scalp and neck off the brain where they meet through
    # skull openings.
    opening_mm: float = 4.0
    # Band along the inner skull surface left out (partial volume of bone, beam hardening).
    brain_margin_mm: float = 3.0
    # A component with more than extra_axial_fraction of its voxels within
    # extra_axial_band_mm of the skull is extra-axial blood, not intraparenchymal.
    extra_axial_band_mm: float = 8.0
    extra_axial_fraction: float = 0.5

    def __post_init__(self) -> None:
        _require(self.blood_hu_min < self.blood_hu_max, "blood_hu_min must be below blood_hu_max")
        _require(self.rim_voxels >= 0, "rim_voxels must be >= 0")
        _require(self.min_component_ml >= 0, "min_component_ml must be >= 0")
        _require(self.smoothing_sigma_mm >= 0, "smoothing_sigma_mm must be >= 0")
        _require(self.opening_mm > 0, "opening_mm must be > 0")
        _require(self.brain_margin_mm >= 0, "brain_margin_mm must be >= 0")
        _require(self.extra_axial_band_mm >= 0, "extra_axial_band_mm must be >= 0")
        _require(0 < self.extra_axial_fraction <= 1, "extra_axial_fraction must lie in (0, 1]")


DeviceChoice = Literal["auto", "cpu", "gpu"]

BLAST_CT_ENSEMBLE_SIZE = 12  # the authors' v1 ensemble (inference/masking/blast_ct/weights)


@dataclass(frozen=True)
class BlastCtParameters:
    """How the ``blast-ct`` masking method runs (``[masking.blast_ct]``, docs/masking.md).

    ensemble:
        Members (1-12) to average; None = the CPU default (8, 10, 11) on a CPU, all 12
        on a GPU.
    device:
        "auto" takes the GPU when the Keras backend sees one.
    max_tile_voxels:
        Output voxels per network call: 60^3 peaks at about 1.4 GB above the volume on
        the CPU (75^3: 2.7 GB, 5 % faster).
    tiles_per_batch:
        Tiles per network call; more helps a GPU with small tiles.
    intracranial_box:
        Run the network only on the intracranial space and a margin (False: everything).
    box_margin_mm:
        Margin around the intracranial space.
    weights_dir:
        Folder of ``model_N.weights.h5`` and their cards; None = the shipped ensemble.
    """

    __pydantic_config__ = _FORBID_EXTRA

    ensemble: tuple[int, ...] | None = None
    device: DeviceChoice = "auto"
    max_tile_voxels: int = 60 * 60 * 60
    tiles_per_batch: int = 1
    intracranial_box: bool = True
    box_margin_mm: float = 5.0
    weights_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.ensemble is not None:
            _require(bool(self.ensemble) and len(set(self.ensemble)) == len(self.ensemble),
                     "blast-ct ensemble must list distinct members")
            _require(all(1 <= m <= BLAST_CT_ENSEMBLE_SIZE for m in self.ensemble),
                     f"blast-ct ensemble members are 1-{BLAST_CT_ENSEMBLE_SIZE}")
        _require(self.max_tile_voxels >= 15 ** 3, "blast-ct max_tile_voxels must be at least 15^3")
        _require(self.tiles_per_batch >= 1, "blast-ct tiles_per_batch must be at least 1")
        _require(self.box_margin_mm >= 0, "blast-ct box_margin_mm must not be negative")


@dataclass(frozen=True)
class PredictorOptions:
    """Which expansion-model weights to load, and where to run them.

    Each weight file needs its model card beside it (docs/model.md).
    """

    weights_path: Path | None = None
    image_only_weights_path: Path | None = None
    device: DeviceChoice = "auto"


@dataclass(frozen=True)
class MaskingChoice:
    """A masking method by name (``inference.masking.registry``) with its parameters.

    ``parameters`` is the method's own dataclass (``ThresholdParameters`` for
    "threshold"); None takes its defaults. Its repr keys the training image cache.
    """

    method: str = "threshold"
    parameters: object | None = None
