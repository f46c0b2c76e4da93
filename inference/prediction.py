"""The seam between the daemon and the expansion predictor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from inference.clinical_variables import ClinicalVariables
from inference.ct_volume import CTVolume
from inference.masking.base import HematomaMask


@dataclass(frozen=True)
class ExpansionPrediction:
    """One prediction, with everything a report must say about where it came from.

    ``clinically_validated`` is True only when the weights' model card says they were
    trained and validated on real patient data for this intended use; otherwise the
    report and alert must present the value as not for clinical use.
    """

    probability: float
    model_name: str
    model_version: str
    weights_origin: str
    clinically_validated: bool
    variables_used: tuple[str, ...]
    variables_missing: tuple[str, ...]
    image_only_fallback: bool
    notes: tuple[str, ...] = field(default_factory=tuple)


class ExpansionPredictor(Protocol):
    """Loaded once (weights kept warm), then called per study."""

    def predict(
        self, volume: CTVolume, mask: HematomaMask, clinical: ClinicalVariables
    ) -> ExpansionPrediction | None:
        """None when no configured model can run (variables missing, no image-only model)."""
        ...
