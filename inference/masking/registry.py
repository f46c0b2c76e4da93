"""Masking methods by name: ``masking.method`` in config.toml picks one, loaded once.

A new method (a learned model, say) implements ``HematomaMasker`` and adds one entry.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.config import MaskingSettings
from daemon.errors import ConfigurationError
from inference.masking.base import HematomaMasker
from inference.masking.threshold import ThresholdMasker


def _blast_ct(_settings: MaskingSettings) -> HematomaMasker:
    # Imported here: the network pulls in Keras, which the threshold method never needs.
    from inference.masking.blast_ct.masker import BlastCtMasker, BlastCtParameters

    # MaskingSettings has no blast-ct section yet: the method runs with its defaults
    # (shipped ensemble, CPU_DEFAULT_ENSEMBLE on a CPU, all 12 on a GPU).
    return BlastCtMasker(BlastCtParameters())


MASKERS: dict[str, Callable[[MaskingSettings], HematomaMasker]] = {
    "threshold": ThresholdMasker,
    "blast-ct": _blast_ct,
}


def create_masker(settings: MaskingSettings) -> HematomaMasker:
    """The configured masking method, ready to ``segment`` volumes.

    Raises
    ------
    ConfigurationError
        When ``settings.method`` names no known method or its parameters are invalid.
    """
    factory = MASKERS.get(settings.method)
    if factory is None:
        raise ConfigurationError(f"unknown masking.method {settings.method!r}; known: {', '.join(MASKERS)}")
    try:
        return factory(settings)
    except ValueError as exc:
        raise ConfigurationError(f"masking: {exc}") from exc
