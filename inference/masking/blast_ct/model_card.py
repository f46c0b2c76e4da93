"""The model card beside each shipped BLAST-CT weight file (``model_N.weights.h5.card.json``).

It says where the weights came from and what they may be used for, so every report can
name them: BLAST-CT v1 (Monteiro et al. 2020), trained on head CT of traumatic brain
injury and not validated on spontaneous intracerebral hemorrhage, 1 mm input, window
-15..100 HU, the classes in output order and the checksum of the source file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from domain.errors import ModelError
from inference.masking.blast_ct.network import CLASS_NAMES

CARD_SUFFIX = ".card.json"


@dataclass(frozen=True)
class BlastCtModelCard:
    """What a report must say about one ensemble member, and what its input must be."""

    model_name: str
    model_version: str
    ensemble_member: int
    source: str
    source_file: str
    source_sha256: str
    citation: str
    licence: str
    training_data: str
    intended_use: str
    validation: str
    clinically_validated: bool
    classes: tuple[str, ...]
    input_spacing_mm: tuple[float, float, float]
    intensity_window_hu: tuple[float, float]
    trainable_parameters: int
    conversion: str

    def __post_init__(self) -> None:
        if self.classes != CLASS_NAMES:
            raise ModelError(f"card classes {self.classes} are not BLAST-CT's {CLASS_NAMES}")
        if self.input_spacing_mm != (1.0, 1.0, 1.0):
            raise ModelError(f"card input spacing {self.input_spacing_mm} is not 1 mm")
        low, high = self.intensity_window_hu
        if not low < high:
            raise ModelError(f"card intensity window {self.intensity_window_hu} is empty")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def card_path(weights_path: Path) -> Path:
    return weights_path.with_name(weights_path.name + CARD_SUFFIX)


def load_card(weights_path: Path) -> BlastCtModelCard:
    """The card beside ``weights_path``; ModelError when it is missing or incomplete."""
    path = card_path(weights_path)
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"BLAST-CT model card {path.name} cannot be read: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"BLAST-CT model card {path.name}: top level must be an object")
    try:
        return BlastCtModelCard(
            **{k: v for k, v in raw.items() if k not in ("classes", "input_spacing_mm", "intensity_window_hu")},
            classes=tuple(raw["classes"]),
            input_spacing_mm=tuple(float(v) for v in raw["input_spacing_mm"]),  # type: ignore[arg-type]
            intensity_window_hu=tuple(float(v) for v in raw["intensity_window_hu"]),  # type: ignore[arg-type]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"BLAST-CT model card {path.name} is incomplete: {exc}") from exc
