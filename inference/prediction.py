"""The seam between the daemon and the expansion predictor."""

from __future__ import annotations

from typing import Protocol

from domain.clinical import ClinicalVariables
from domain.imaging import CTVolume, HematomaMask
from domain.prediction import ExpansionPrediction


class ExpansionPredictor(Protocol):
    """Loaded once (weights kept warm), then called per study."""

    def predict(
        self, volume: CTVolume, mask: HematomaMask, clinical: ClinicalVariables
    ) -> ExpansionPrediction | None:
        """None when no configured model can run (variables missing, no image-only model)."""
        ...
