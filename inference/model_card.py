"""The model card that sits beside every weight file (``<weights>.card.json`` or ``.card.toml``).

A card states where the weights came from, what they were trained on, what they are
for, how they were validated, and whether that validation makes them fit for clinical
use. It also carries the clinical standardisation (training-set mean and SD of each
continuous variable), because the weights are meaningless without it. No card, or an
invalid one, means no model: ``ModelError``.

Example (JSON)::

    {
      "model_name": "Multimodal CNN Model 2", "model_version": "site-2026-01",
      "architecture": "multimodal_cnn_model2",
      "origin": "trained with `hemex train` at ...", "training_data": "...",
      "intended_use": "...", "validation": {"external_auc": 0.79},
      "clinically_validated": false,
      "input_shape": [256, 256, 80, 1],
      "graph": {},   (optional ModelSpec fields; absent = the published graph)
      "clinical_variables": ["anticoagulant_use", "systolic_bp_mmhg", ...],
      "standardisation": {"systolic_bp_mmhg": {"mean": 160.0, "sd": 25.0}, ...}
    }
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from domain.clinical import BINARY_PREDICTOR_VARIABLES, PREDICTOR_VARIABLES
from domain.durable_files import write_atomically
from domain.errors import ModelError
from inference.tanioka_models import ModelSpec

CARD_SUFFIXES: tuple[str, ...] = (".card.json", ".card.toml")
_REQUIRED_TEXT = ("model_name", "model_version", "architecture", "origin", "training_data",
                  "intended_use")


@dataclass(frozen=True)
class Standardisation:
    """Training-set mean and SD of one continuous variable."""

    mean: float
    sd: float

    def apply(self, value: float) -> float:
        return (value - self.mean) / self.sd


@dataclass(frozen=True)
class ModelCard:
    """What a report must say about a set of weights, and what the weights need."""

    model_name: str
    model_version: str
    architecture: str
    origin: str
    training_data: str
    intended_use: str
    validation: dict[str, object]
    clinically_validated: bool
    input_shape: tuple[int, int, int, int]
    clinical_variables: tuple[str, ...] = ()
    standardisation: dict[str, Standardisation] = field(default_factory=dict)
    # ModelSpec fields that differ from the published graph (filters, kernels, padding,
    # block_order, dense_units, clinical_units, head_units, dropout); empty = published.
    graph: dict[str, object] = field(default_factory=dict)

    def model_spec(self) -> ModelSpec:
        """The graph these weights belong to; ModelError if the card names an unknown one."""
        unknown = set(self.graph) - _GRAPH_KEYS
        if unknown:
            raise ModelError(f"model card graph has unknown keys {sorted(unknown)}")
        kwargs = {k: _tuples(v) for k, v in self.graph.items()}
        try:
            return ModelSpec(architecture=self.architecture,  # type: ignore[arg-type]
                             input_shape=self.input_shape,
                             n_clinical=len(self.clinical_variables) or len(PREDICTOR_VARIABLES),
                             **kwargs)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise ModelError(f"model card does not describe a known model: {exc}") from exc

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["clinical_variables"] = list(self.clinical_variables)
        return d


_GRAPH_KEYS = frozenset({"filters", "kernels", "padding", "block_order", "dense_units",
                         "clinical_units", "head_units", "dropout"})


def _tuples(value: object) -> object:
    """JSON lists -> tuples, recursively, so they compare equal to ModelSpec defaults."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def graph_of(spec: ModelSpec) -> dict[str, object]:
    """The ModelSpec fields of ``spec`` that differ from the published graph, for a card."""
    published = ModelSpec(architecture=spec.architecture)
    return {k: getattr(spec, k) for k in sorted(_GRAPH_KEYS)
            if getattr(spec, k) != getattr(published, k)}


def card_path_for(weights_path: Path) -> Path | None:
    """The card beside ``weights_path`` (JSON preferred), or None when there is none."""
    for suffix in CARD_SUFFIXES:
        candidate = weights_path.with_name(weights_path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _require(cond: bool, path: Path, message: str) -> None:
    if not cond:
        raise ModelError(f"invalid model card {path.name}: {message}")


def parse_model_card(raw: dict[str, Any], path: Path) -> ModelCard:
    """Validate a card's content; every problem is a ModelError naming the file."""
    for key in _REQUIRED_TEXT:
        _require(isinstance(raw.get(key), str) and bool(str(raw.get(key)).strip()), path,
                 f"'{key}' must be a non-empty string")
    _require(isinstance(raw.get("clinically_validated"), bool), path,
             "'clinically_validated' must be true or false")
    validation: Any = raw.get("validation")
    _require(isinstance(validation, dict), path, "'validation' must be a table of figures")
    shape: Any = raw.get("input_shape")
    _require(isinstance(shape, list) and len(shape) == 4
             and all(isinstance(v, int) and v > 0 for v in shape), path,
             "'input_shape' must be four positive integers (H, W, slices, channel)")
    names: Any = raw.get("clinical_variables") or []
    _require(isinstance(names, list) and all(isinstance(n, str) for n in names), path,
             "'clinical_variables' must be a list of names")
    variables: tuple[str, ...] = tuple(names)
    if raw["architecture"] == "multimodal_cnn_model2":
        _require(variables == PREDICTOR_VARIABLES, path,
                 f"'clinical_variables' must be {list(PREDICTOR_VARIABLES)} in that order")
    scaler_raw: Any = raw.get("standardisation") or {}
    _require(isinstance(scaler_raw, dict), path, "'standardisation' must be a table")
    scalers: dict[str, Standardisation] = {}
    for name, entry in scaler_raw.items():
        _require(isinstance(entry, dict) and "mean" in entry and "sd" in entry, path,
                 f"standardisation of {name} needs mean and sd")
        mean, sd = entry["mean"], entry["sd"]
        _require(isinstance(mean, (int, float)) and math.isfinite(mean), path, f"{name}: bad mean")
        _require(isinstance(sd, (int, float)) and math.isfinite(sd) and sd > 0, path,
                 f"{name}: sd must be positive")
        scalers[str(name)] = Standardisation(float(mean), float(sd))
    for name in variables:
        if name not in BINARY_PREDICTOR_VARIABLES:
            _require(name in scalers, path, f"no standardisation (mean, sd) for {name}")
    graph: Any = raw.get("graph") or {}
    _require(isinstance(graph, dict), path, "'graph' must be a table")
    card = ModelCard(
        model_name=str(raw["model_name"]), model_version=str(raw["model_version"]),
        architecture=str(raw["architecture"]), origin=str(raw["origin"]),
        training_data=str(raw["training_data"]), intended_use=str(raw["intended_use"]),
        validation=dict(validation), clinically_validated=bool(raw["clinically_validated"]),
        input_shape=(shape[0], shape[1], shape[2], shape[3]),
        clinical_variables=variables, standardisation=scalers,
        graph={str(k): _tuples(v) for k, v in graph.items()},
    )
    card.model_spec()  # architecture and graph must be known
    return card


def load_model_card(weights_path: Path) -> ModelCard:
    """Read and validate the card beside ``weights_path``; ModelError if absent or invalid."""
    path = card_path_for(weights_path)
    if path is None:
        raise ModelError(f"no model card beside {weights_path.name} "
                         f"(expected {weights_path.name}.card.json or .card.toml)")
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ModelError(f"model card {path.name} cannot be read: {exc}") from exc
    _require(isinstance(raw, dict), path, "top level must be an object")
    return parse_model_card(raw, path)


def write_model_card(card: ModelCard, weights_path: Path) -> Path:
    """Write ``card`` as ``<weights>.card.json`` (atomically) and return its path."""
    path = weights_path.with_name(weights_path.name + ".card.json")
    write_atomically(path, json.dumps(card.to_dict(), indent=2, sort_keys=True).encode("utf-8"))
    return path
