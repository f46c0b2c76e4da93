"""Evaluate weights on a labelled manifest: Table-2 style metrics with 95 % CIs, plots.

Writes ``predictions.csv``, ``metrics.json``, ``roc.png`` and ``calibration.png`` into
the output folder and returns the metrics; ``format_metrics`` gives the printed table.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from inference.parameters import MaskingChoice
from inference.tanioka_preprocessing import geometry_for_shape
from inference.training.dataset import (
    PreparedImages,
    clinical_matrix,
    load_manifest,
    prepare_images,
)
from inference.training.metrics import BinaryMetrics, binary_metrics
from inference.training.plots import plot_calibration, plot_roc
from inference.weights import LoadedModel, load_model_with_card


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics and the files written."""

    metrics: BinaryMetrics
    model_name: str
    model_version: str
    clinically_validated: bool
    roc_png: Path
    calibration_png: Path
    predictions_csv: Path
    metrics_json: Path
    masks: str = ""  # where the masks came from (manifest or automatic method)


def predict_cases(loaded: LoadedModel, manifest: Path, cache_dir: Path, batch_size: int = 2,
                  masking: MaskingChoice | None = None,
                  ) -> tuple[list[str], np.ndarray, np.ndarray, PreparedImages]:
    """(case ids, labels, probabilities, prepared images) of every case in ``manifest``."""
    card = loaded.card
    cases = load_manifest(manifest)
    prepared = prepare_images(cases, geometry_for_shape(card.input_shape), cache_dir, masking)
    paths = prepared.paths
    multimodal = card.model_spec().multimodal
    clinical = clinical_matrix(cases, card.standardisation) if multimodal else None
    probs = []
    for start in range(0, len(cases), batch_size):
        images = np.stack([np.load(p) for p in paths[start:start + batch_size]])
        inputs = images if clinical is None else [images, clinical[start:start + batch_size]]
        probs.append(np.asarray(loaded.model.predict_on_batch(inputs)).reshape(-1))
    return ([c.case_id for c in cases], np.array([c.label for c in cases]), np.concatenate(probs),
            prepared)


def format_metrics(report: EvaluationReport) -> str:
    """The printed table (value and 95 % CI per metric)."""
    m = report.metrics
    status = "clinically validated" if report.clinically_validated else "NOT clinically validated"
    return "\n".join([
        f"model: {report.model_name} {report.model_version} ({status})",
        f"cases: {m.n} ({m.n_positive} expansions); threshold {m.threshold}",
        *([report.masks] if report.masks else []),
        f"sensitivity  {m.sensitivity.text()}  [{m.sensitivity.method}]",
        f"specificity  {m.specificity.text()}  [{m.specificity.method}]",
        f"accuracy     {m.accuracy.text()}  [{m.accuracy.method}]",
        f"ROC AUC      {m.auc.text()}  [{m.auc.method}]",
        f"TP {m.tp}  FP {m.fp}  TN {m.tn}  FN {m.fn}",
    ])


def evaluate(weights: Path, manifest: Path, out_dir: Path, threshold: float = 0.5,
             n_boot: int = 2000, seed: int = 0,
             masking: MaskingChoice | None = None) -> EvaluationReport:
    """Evaluate ``weights`` (with their card) on ``manifest``; write files to ``out_dir``.

    Cases without a mask file are masked by the automatic method ``masking`` names.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model_with_card(weights)
    ids, labels, probs, prepared = predict_cases(loaded, manifest, out_dir / "cache",
                                                 masking=masking)
    metrics = binary_metrics(labels, probs, threshold, n_boot=n_boot, seed=seed)
    title = loaded.card.model_name
    report = EvaluationReport(
        metrics=metrics, model_name=loaded.card.model_name, model_version=loaded.card.model_version,
        clinically_validated=loaded.card.clinically_validated, roc_png=out_dir / "roc.png",
        calibration_png=out_dir / "calibration.png", predictions_csv=out_dir / "predictions.csv",
        metrics_json=out_dir / "metrics.json", masks=prepared.masks_statement())
    plot_roc(labels, probs, metrics.auc.value, report.roc_png, title, (metrics.auc.low, metrics.auc.high))
    plot_calibration(labels, probs, report.calibration_png, title)
    with report.predictions_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "label", "probability"])
        w.writerows([i, int(y), f"{p:.6f}"] for i, y, p in zip(ids, labels, probs))
    report.metrics_json.write_text(json.dumps({**asdict(metrics), "masks": report.masks}, indent=2))
    return report
