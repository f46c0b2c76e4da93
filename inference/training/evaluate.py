"""Evaluate weights on a labelled manifest: Table-2 style metrics with 95 % CIs, plots.

Writes ``predictions.csv``, ``metrics.json``, ``roc.png`` and ``calibration.png`` into
the output folder and returns the metrics; ``format_metrics`` gives the printed table.
"""

from __future__ import annotations

import csv
import json
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt
import numpy as np

from inference.parameters import MaskingChoice
from inference.tanioka_preprocessing import geometry_for_shape
from inference.training.dataset import (
    PreparedImages,
    clinical_matrix,
    load_manifest,
    prepare_images,
)
from inference.training.metrics import (
    BinaryMetrics,
    CalibrationBin,
    binary_metrics,
    calibration_bins,
    roc_curve,
)
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


def _title(ax: plt.Axes, title: str) -> None:
    # Wrapped, so a long model name and period stay inside the figure.
    ax.set_title("\n".join(textwrap.wrap(title, 42)) or title, fontsize=10)


def _rates(bins: list[CalibrationBin]) -> tuple[np.ndarray, np.ndarray]:
    """Observed rates of non-empty bins and their (below, above) error bar lengths."""
    rate = np.asarray([float(b.observed or 0.0) for b in bins])
    low = np.asarray([float(b.observed_low or 0.0) for b in bins])
    high = np.asarray([float(b.observed_high or 0.0) for b in bins])
    return rate, np.vstack([rate - low, high - rate])


def plot_roc(labels: np.ndarray, probs: np.ndarray, auc: float | None, path: Path, title: str,
             auc_ci: tuple[float | None, float | None] | None = None) -> None:
    """ROC curve with the AUC (and its 95 % CI when given) in the legend."""
    fpr, tpr = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    label = f"AUC {auc:.3f}" if auc is not None else "AUC n/a"
    if auc is not None and auc_ci is not None and None not in auc_ci:
        label += f" (95 % CI {auc_ci[0]:.3f}-{auc_ci[1]:.3f})"
    ax.plot(fpr, tpr, lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1))
    _title(ax, f"{title} (n={len(labels)}, {int(np.sum(labels))} expansions)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_calibration(labels: np.ndarray, probs: np.ndarray, path: Path, title: str,
                     n_bins: int = 10) -> list[CalibrationBin]:
    """Observed expansion rate against mean predicted probability per bin, with Wilson
    95 % intervals and each bin's count; returns the bins."""
    bins = calibration_bins(labels, probs, np.linspace(0, 1, n_bins + 1))
    filled = [b for b in bins if b.n]
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect")
    if filled:
        x = np.asarray([float(b.mean_predicted or 0.0) for b in filled])
        y, err = _rates(filled)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label="observed (95 % CI)")
        for b, xi, yi in zip(filled, x, y):
            ax.annotate(f"n={b.n}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="predicted probability", ylabel="observed expansion rate", xlim=(0, 1), ylim=(0, 1))
    _title(ax, title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return bins


def plot_rate_by_score(bins: list[CalibrationBin], path: Path, title: str, xlabel: str) -> None:
    """Observed expansion rate (95 % CI, count) per band of a points score (no predicted
    probability to calibrate against, e.g. a score whose per-point risk is not verified)."""
    filled = [b for b in bins if b.n]
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    if filled:
        x = np.asarray([(b.low + b.high) / 2 for b in filled])
        y, err = _rates(filled)
        ax.errorbar(x, y, yerr=err, marker="s", capsize=3, ls="none", label="observed (95 % CI)")
        for b, xi, yi in zip(filled, x, y):
            ax.annotate(f"n={b.n}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.legend(loc="upper left", fontsize=8)
    ax.set(xlabel=xlabel, ylabel="observed expansion rate", ylim=(0, 1),
           xlim=(bins[0].low, bins[-1].high) if bins else None)
    _title(ax, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
