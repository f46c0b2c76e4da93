"""The site's own accuracy: each baseline's prediction against what its first follow-up
CT showed (``observed_outcomes``), per model version and masking method, with the BRAIN
score beside the network.

Only labelled outcomes count (the volume rule; not assessable ones are counted apart with
their reasons). Sensitivity and specificity at ``[prediction] risk_threshold`` with
Wilson intervals, ROC AUC with a seeded percentile bootstrap
(``inference.training.metrics``, the same code as ``hemex evaluate``), calibration in
bins with counts and Wilson intervals, and the expected calibration error. The BRAIN
score has no verified per-point risk in this project, so it gets its AUC, its
sensitivity and specificity at ``[performance] brain_cutoff_points`` (a site choice) and
the observed rate per band of points, not a calibration. ``docs/site-performance.md``
says what the figures mean and what they do not.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from daemon.config import Settings
from domain.outcomes import ObservedOutcome
from inference.training.metrics import (
    BinaryMetrics,
    CalibrationBin,
    binary_metrics,
    calibration_bins,
    expected_calibration_error,
)

BRAIN_NAME = "BRAIN score (Wang 2015)"
BRAIN_EDGES = np.array([0, 5, 10, 15, 20, 25], dtype=float)  # bands 0-4, 5-9, ..., 20-24 points


@dataclass(frozen=True)
class ScoreFigures:
    """One score (a model version, or the BRAIN score) on one masking method's cases."""

    name: str
    version: str
    method: str
    clinically_validated: bool | None  # None for the BRAIN score
    metrics: BinaryMetrics
    bins: tuple[CalibrationBin, ...]
    calibration_error: float | None  # None for the BRAIN score (no probability)
    labels: tuple[int, ...]
    scores: tuple[float, ...]
    left_out: int = 0  # labelled cases without this score (BRAIN components missing)

    @property
    def title(self) -> str:
        return f"{self.name} {self.version}".strip() + f", masks {self.method}"


@dataclass(frozen=True)
class PerformanceReport:
    """Everything ``hemex performance`` prints, for baselines acquired in [since, until)."""

    since: datetime | None
    until: datetime | None
    outcomes: int
    labelled: int
    not_assessable: dict[str, int]  # reason kind -> count
    awaiting: int  # baselines with no observed outcome (no follow-up CT in the window, yet)
    threshold: float
    brain_cutoff: int
    models: tuple[ScoreFigures, ...]
    brain: tuple[ScoreFigures, ...]
    no_prediction: int  # labelled outcomes whose baseline had no expansion probability


def _reason_kind(outcome: ObservedOutcome) -> str:
    if outcome.change.evacuation == "procedure":
        return "evacuation reported"
    if outcome.change.evacuation == "volume_drop":
        return "volume fell (unreported evacuation?)"
    if f"{outcome.method_name} {outcome.method_version}" != (f"{outcome.followup_method_name}"
                                                            f" {outcome.followup_method_version}"):
        return "masking method changed"
    return "other"


def site_performance(outcomes: Sequence[ObservedOutcome], settings: Settings, awaiting: int = 0,
                     since: datetime | None = None, until: datetime | None = None,
                     n_boot: int | None = None, seed: int = 0) -> PerformanceReport:
    """The figures of ``outcomes`` (first follow-ups only count)."""
    perf = settings.performance
    threshold = settings.prediction.risk_threshold
    n_boot = perf.bootstrap if n_boot is None else n_boot
    firsts = [o for o in outcomes if o.role.value == "followup"]
    labelled = [o for o in firsts if o.label is not None]
    not_assessable = Counter(_reason_kind(o) for o in firsts if o.label is None)
    groups: dict[tuple[str, str, str, bool], list[ObservedOutcome]] = {}
    for o in labelled:
        if o.prediction is not None:
            key = (o.prediction.model_name, o.prediction.model_version, f"{o.method_name} {o.method_version}",
                   o.prediction.clinically_validated)
            groups.setdefault(key, []).append(o)
    models = []
    for (name, version, method, validated), cases in sorted(groups.items()):
        labels = np.array([o.label for o in cases], dtype=int)
        probs = np.asarray([o.prediction.probability for o in cases if o.prediction is not None], dtype=np.float64)
        bins = calibration_bins(labels, probs, np.linspace(0, 1, perf.calibration_bins + 1))
        models.append(ScoreFigures(name, version, method, validated,
                                   binary_metrics(labels, probs, threshold, n_boot=n_boot, seed=seed),
                                   tuple(bins), expected_calibration_error(bins),
                                   tuple(int(v) for v in labels), tuple(float(v) for v in probs)))
    brain = []
    for method in sorted({f"{o.method_name} {o.method_version}" for o in labelled}):
        of_method = [o for o in labelled if f"{o.method_name} {o.method_version}" == method]
        scored = [o for o in of_method if o.brain_points is not None]
        if not scored:
            continue
        labels = np.array([o.label for o in scored], dtype=int)
        points = np.asarray([float(o.brain_points or 0) for o in scored], dtype=np.float64)
        brain.append(ScoreFigures(BRAIN_NAME, "", method, None,
                                  binary_metrics(labels, points, float(perf.brain_cutoff_points), n_boot=n_boot,
                                                 seed=seed),
                                  tuple(calibration_bins(labels, points, BRAIN_EDGES)), None,
                                  tuple(int(v) for v in labels), tuple(float(v) for v in points),
                                  left_out=len(of_method) - len(scored)))
    return PerformanceReport(since, until, len(firsts), len(labelled), dict(not_assessable), awaiting, threshold,
                             perf.brain_cutoff_points, tuple(models), tuple(brain),
                             sum(1 for o in labelled if o.prediction is None))


def _bin_lines(figures: ScoreFigures, probability: bool) -> list[str]:
    lines = []
    for b in figures.bins:
        span = f"{b.low:.2f}-{b.high:.2f}" if probability else f"{b.low:.0f}-{b.high - 1:.0f} points"
        if not b.n:
            lines.append(f"    {span:<16} n=0")
            continue
        predicted = f"  predicted {b.mean_predicted:.2f}" if probability else ""
        lines.append(f"    {span:<16} n={b.n:<4}{predicted}  observed {b.observed:.2f}"
                     f" ({b.observed_low:.2f}-{b.observed_high:.2f})")
    return lines


def format_report(report: PerformanceReport) -> str:
    """The printed report: every figure with its 95 % CI and method."""
    period = (f"{report.since.date().isoformat() if report.since else 'the beginning'} to"
              f" {report.until.date().isoformat() if report.until else 'now'}")
    reasons = ", ".join(f"{n} {kind}" for kind, n in sorted(report.not_assessable.items())) or "none"
    lines = [
        f"hemex site performance: baselines acquired from {period}",
        (f"observed outcomes (first follow-up CT): {report.outcomes}; labelled {report.labelled};"
         f" not assessable {sum(report.not_assessable.values())} ({reasons})"),
        f"baselines without an observed outcome (no follow-up CT in the window, or not yet): {report.awaiting}",
        "expansion = follow-up minus baseline volume > 6 mL or > 33 %, on the node's own masks",
    ]
    if report.no_prediction:
        lines.append(f"labelled baselines without an expansion probability (no model ran): {report.no_prediction}")
    for m in report.models:
        status = "clinically validated" if m.clinically_validated else "NOT clinically validated"
        lines += ["", (f"model {m.name} {m.version} ({status}); masks {m.method}:"
                       f" n={m.metrics.n}, expansions {m.metrics.n_positive}"), *_metric_lines(m, report.threshold),
                  f"  calibration in {len(m.bins)} bins (count, mean predicted, observed rate with 95 % CI):",
                  *_bin_lines(m, True),
                  "  expected calibration error " + ("n/a" if m.calibration_error is None
                                                     else f"{m.calibration_error:.3f}")]
    for b in report.brain:
        lines += ["", f"{b.name}; masks {b.method}: n={b.metrics.n}, expansions {b.metrics.n_positive}"
                      + (f" ({b.left_out} labelled without all BRAIN components)" if b.left_out else ""),
                  *_metric_lines(b, report.brain_cutoff, points=True),
                  ("  observed expansion rate by points (count, rate with 95 % CI; the published per-point"
                   " risk is not verified here):"), *_bin_lines(b, False)]
    if not report.models and not report.brain:
        lines += ["", "no labelled outcome with a prediction or a BRAIN score in this period"]
    return "\n".join(lines)


def _metric_lines(f: ScoreFigures, cut: float, points: bool = False) -> list[str]:
    m = f.metrics
    where = f"at >= {cut:g} points (a site choice, not a published cut-off)" if points else f"at threshold {cut:g}"
    return [f"  sensitivity {m.sensitivity.text()}  specificity {m.specificity.text()}  {where} [Wilson]",
            f"  TP {m.tp}  FP {m.fp}  TN {m.tn}  FN {m.fn}",
            f"  ROC AUC {m.auc.text()}  [{m.auc.method}]"]


def slug(figures: ScoreFigures) -> str:
    """A file-name part for a score's plots."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", figures.title).strip("-").lower()


def write_plots(report: PerformanceReport, out_dir: Path) -> list[Path]:
    """ROC and calibration PNGs of every model, ROC and rate-by-points PNGs of the BRAIN score."""
    from inference.training.plots import plot_calibration, plot_rate_by_score, plot_roc

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in (*report.models, *report.brain):
        labels, scores = np.array(f.labels), np.array(f.scores)
        name = slug(f)
        auc = f.metrics.auc
        roc = out_dir / f"roc-{name}.png"
        plot_roc(labels, scores, auc.value, roc, f"ROC, site data: {f.title}", (auc.low, auc.high))
        second = out_dir / f"calibration-{name}.png"
        if f.clinically_validated is None:
            plot_rate_by_score(list(f.bins), second, f"Observed expansion by {f.name} points, masks {f.method}",
                               "BRAIN score points")
        else:
            plot_calibration(labels, scores, second, f"Calibration, site data: {f.title}", n_bins=len(f.bins))
        written += [roc, second]
    return written
