"""ROC and calibration plots with their 95 % intervals and counts (PNG, files only), for
``hemex evaluate`` and ``hemex performance``. Kept apart from evaluate.py so that plotting
loads matplotlib only, not Keras."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt
import numpy as np

from inference.training.metrics import CalibrationBin, calibration_bins, roc_curve


def _title(ax: plt.Axes, title: str) -> None:
    # Wrapped, so a long model name and period stay inside the figure.
    ax.set_title("\n".join(textwrap.wrap(title, 42)) or title, fontsize=10)


def _rates(bins: list[CalibrationBin]) -> tuple[np.ndarray, np.ndarray]:
    """Observed rates of non-empty bins and their (below, above) error bar lengths."""
    rate = np.asarray([float(b.observed or 0.0) for b in bins])
    low = np.asarray([float(b.observed_low or 0.0) for b in bins])
    high = np.asarray([float(b.observed_high or 0.0) for b in bins])
    # Clipped at 0: Wilson's bound at a rate of 0 or 1 can miss it by a rounding error.
    return rate, np.clip(np.vstack([rate - low, high - rate]), 0.0, None)


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
            ax.annotate(f"n={b.n}", (xi, yi), textcoords="offset points", xytext=(5, 4 if yi < 0.15 else -11),
                        fontsize=7)
    ax.set(xlabel="predicted probability", ylabel="observed expansion rate", xlim=(0, 1), ylim=(-0.02, 1.02))
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
            ax.annotate(f"n={b.n}", (xi, yi), textcoords="offset points", xytext=(5, 4 if yi < 0.15 else -11),
                        fontsize=7)
        ax.legend(loc="upper left", fontsize=8)
    ax.set(xlabel=xlabel, ylabel="observed expansion rate", ylim=(-0.02, 1.02),
           xlim=(bins[0].low, bins[-1].high) if bins else None)
    _title(ax, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
