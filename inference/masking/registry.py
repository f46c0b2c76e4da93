"""Masking methods by name: ``masking.method`` in config.toml picks one, loaded once.

A new method implements ``HematomaMasker``, takes its own parameter dataclass (or none)
and adds one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.errors import ConfigurationError
from inference.masking.base import HematomaMasker
from inference.masking.threshold import ThresholdMasker
from inference.parameters import BlastCtParameters


def _blast_ct(parameters: BlastCtParameters | None) -> HematomaMasker:
    # Imported here: the network pulls in Keras, which the threshold method never needs.
    from inference.masking.blast_ct.masker import BlastCtMasker

    return BlastCtMasker(parameters)


MASKERS: dict[str, Callable[[Any], HematomaMasker]] = {
    "threshold": ThresholdMasker,
    "blast-ct": _blast_ct,
}


def create_masker(method: str, parameters: object | None = None) -> HematomaMasker:
    """The masking method called ``method``, ready to ``segment`` volumes.

    ``parameters`` is the method's parameter dataclass (``inference.parameters``); None
    takes its defaults.

    Raises
    ------
    ConfigurationError
        When ``method`` names no known method or its parameters are invalid.
    """
    factory = MASKERS.get(method)
    if factory is None:
        raise ConfigurationError(f"unknown masking.method {method!r}; known: {', '.join(MASKERS)}")
    try:
        return factory(parameters)
    except ValueError as exc:
        raise ConfigurationError(f"masking: {exc}") from exc
