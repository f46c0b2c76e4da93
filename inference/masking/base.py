"""The seam every hematoma masking method implements."""

from __future__ import annotations

from typing import Protocol

from domain.imaging import CTVolume, HematomaMask


class HematomaMasker(Protocol):
    """A masking method: loaded once, then called for each volume."""

    name: str
    version: str

    def segment(self, volume: CTVolume) -> HematomaMask:
        """Return the intraparenchymal hematoma mask of ``volume``."""
        ...
