"""Classification metrics with 95 % confidence intervals, as in Tanioka et al.'s Table 2.

ROC AUC is computed from probabilities (the authors' code used 0/1 predictions; we do
not repeat that). Proportions get Wilson intervals; the AUC a seeded percentile bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A value with its 95 % CI (None where it cannot be computed)."""

    value: float | None
    low: float | None
    high: float | None
    method: str

    def text(self) -> str:
        if self.value is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"


@dataclass(frozen=True)
class BinaryMetrics:
    """Sensitivity, specificity, accuracy and ROC AUC at one threshold."""

    n: int
    n_positive: int
    threshold: float
    sensitivity: Estimate
    specificity: Estimate
    accuracy: Estimate
    auc: Estimate
    tp: int
    fp: int
    tn: int
    fn: int


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval for a proportion."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None if one class only."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if pos.size == 0 or neg.size == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < scores.size:  # average ranks over ties
        j = i
        while j + 1 < scores.size and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - pos.size * (pos.size + 1) / 2.0) / (pos.size * neg.size))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over all thresholds, from (0,0) to (1,1)."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.unique(scores)[::-1]
    p, n = max(labels.sum(), 1), max((1 - labels).sum(), 1)
    fpr, tpr = [0.0], [0.0]
    for t in thresholds:
        pred = scores >= t
        tpr.append(float((pred & (labels == 1)).sum() / p))
        fpr.append(float((pred & (labels == 0)).sum() / n))
    if fpr[-1] != 1.0 or tpr[-1] != 1.0:
        fpr.append(1.0)
        tpr.append(1.0)
    return np.array(fpr), np.array(tpr)


def bootstrap_auc_interval(labels: np.ndarray, scores: np.ndarray, n_boot: int,
                           seed: int) -> tuple[float, float] | None:
    """Percentile 95 % interval of the AUC over ``n_boot`` seeded resamples."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, labels.size, labels.size)
        auc = roc_auc(labels[idx], scores[idx])
        if auc is not None:
            values.append(auc)
    if len(values) < max(10, n_boot // 2):
        return None
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def _proportion(successes: int, n: int) -> Estimate:
    if n == 0:
        return Estimate(None, None, None, "Wilson")
    low, high = wilson_interval(successes, n)
    return Estimate(successes / n, low, high, "Wilson")


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5,
                   n_boot: int = 2000, seed: int = 0) -> BinaryMetrics:
    """Metrics at ``threshold`` (published cut-off 0.5), AUC from the probabilities."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.shape != probabilities.shape or labels.ndim != 1:
        raise ValueError("labels and probabilities must be 1-D and the same length")
    pred = probabilities >= threshold
    tp = int((pred & (labels == 1)).sum())
    fn = int((~pred & (labels == 1)).sum())
    tn = int((~pred & (labels == 0)).sum())
    fp = int((pred & (labels == 0)).sum())
    auc = roc_auc(labels, probabilities)
    ci = bootstrap_auc_interval(labels, probabilities, n_boot, seed) if auc is not None and n_boot else None
    return BinaryMetrics(
        n=int(labels.size), n_positive=int(labels.sum()), threshold=threshold,
        sensitivity=_proportion(tp, tp + fn), specificity=_proportion(tn, tn + fp),
        accuracy=_proportion(tp + tn, labels.size),
        auc=Estimate(auc, ci[0] if ci else None, ci[1] if ci else None,
                     f"bootstrap n={n_boot} seed={seed}"),
        tp=tp, fp=fp, tn=tn, fn=fn,
    )


@dataclass(frozen=True)
class CalibrationBin:
    """Cases whose score fell in [low, high): how many, the mean predicted probability,
    the observed expansion rate and its Wilson 95 % interval (None when the bin is empty)."""

    low: float
    high: float
    n: int
    mean_predicted: float | None
    observed: float | None
    observed_low: float | None
    observed_high: float | None


def calibration_bins(labels: np.ndarray, scores: np.ndarray, edges: np.ndarray) -> list[CalibrationBin]:
    """Observed rate per bin of ``scores`` (``edges`` ascending; the last bin includes its
    upper edge), with counts and Wilson intervals: the table under a calibration plot."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    which = np.clip(np.digitize(scores, edges[1:-1], right=False), 0, len(edges) - 2)
    bins = []
    for b in range(len(edges) - 1):
        sel = which == b
        n = int(sel.sum())
        if n == 0:
            bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), 0, None, None, None, None))
            continue
        positives = int(labels[sel].sum())
        low, high = wilson_interval(positives, n)
        bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), n, float(scores[sel].mean()),
                                   positives / n, low, high))
    return bins


def expected_calibration_error(bins: list[CalibrationBin]) -> float | None:
    """Mean |observed - mean predicted| over the bins, weighted by their counts."""
    total = sum(b.n for b in bins)
    if total == 0:
        return None
    return float(sum(b.n * abs((b.observed or 0.0) - (b.mean_predicted or 0.0)) for b in bins if b.n) / total)
