"""`hemex performance` on a database of stored predictions with known outcomes gives the AUC
and 95 % CI of a reference computation (scikit-learn's roc_auc_score and a percentile
bootstrap written here), and the drift check warns through the metrics, the log and an
e-mail that a real SMTP server (aiosmtpd) receives.

The outcomes are synthetic (seeded): 80 baselines, a quarter expanding, probabilities
from a made-up model that separates them imperfectly, BRAIN points likewise.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sklearn.metrics import roc_auc_score

from daemon.cli import main as hemex_main
from daemon.config import load_settings
from daemon.deliver.channels import build_channels
from daemon.deliver.outbox import Outbox
from daemon.ops.loop_metrics import ClosedLoopCollector
from daemon.ops.performance_drift import check_drift
from daemon.state.database import Database
from domain.followup import FollowupRules, Role, VolumeReading, observe_change
from domain.outcomes import ObservedOutcome
from domain.prediction import ExpansionPrediction
from tests.support.alert_peers import SmtpReceiver
from tests.support.databases import open_database

T0 = datetime(2026, 3, 1, 8, 0)
N, BOOT, SEED = 80, 400, 3
PNG = b"\x89PNG\r\n\x1a\n"


def _cases(seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(N) < 0.25).astype(int)
    probs = np.clip(0.3 + 0.25 * labels + rng.normal(0, 0.18, N), 0.01, 0.99).round(4)
    points = np.clip(np.rint(8 + 5 * labels + rng.normal(0, 4, N)), 0, 24).astype(int)
    return labels, probs, points


def _outcome(i: int, label: int, probability: float | None, points: int | None,
             evacuated: bool = False) -> ObservedOutcome:
    base_at, follow_at = T0 + timedelta(days=i), T0 + timedelta(days=i, hours=24)
    base = 20.0
    follow = 5.0 if evacuated else base + (9.0 if label else 1.0)
    change = observe_change(VolumeReading(base, "hemex-threshold", "1.0.0", base_at),
                            VolumeReading(follow, "hemex-threshold", "1.0.0", follow_at), FollowupRules())
    prediction = None if probability is None else ExpansionPrediction(
        float(probability), "site-model", "2.0", "trained on site data", False, (), (), False)
    return ObservedOutcome(f"1.2.3.{i}", f"st-b{i}", f"1.2.4.{i}", f"st-f{i}", base_at, follow_at, Role.FOLLOWUP,
                           change, "hemex-threshold", "1.0.0", "hemex-threshold", "1.0.0", prediction,
                           None if points is None else int(points), "0.1.0")


def _store(data_dir: Path, outcomes: list[ObservedOutcome]) -> Database:
    db = open_database(data_dir / "hemex.sqlite3")
    with db.transaction() as repos:
        for outcome in outcomes:
            repos.followups.record_outcome(outcome, 0.0)
    return db


def _reference_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """sklearn's AUC and a percentile bootstrap of it (seeded resamples of the cases)."""
    rng = np.random.default_rng(SEED)
    values = []
    for _ in range(BOOT):
        idx = rng.integers(0, len(labels), len(labels))
        if 0 < labels[idx].sum() < len(idx):
            values.append(roc_auc_score(labels[idx], scores[idx]))
    return roc_auc_score(labels, scores), np.percentile(values, 2.5), np.percentile(values, 97.5)


def _printed_auc(text: str, section: str) -> tuple[float, float, float]:
    block = text[text.index(section):]
    value, low, high = re.search(r"ROC AUC (\d\.\d{3}) \((\d\.\d{3})-(\d\.\d{3})\)", block).groups()  # type: ignore[union-attr]
    return float(value), float(low), float(high)


def test_performance_agrees_with_scikit_learn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels, probs, points = _cases()
    outcomes = [_outcome(i, int(labels[i]), probs[i], points[i]) for i in range(N)]
    # Not assessable (evacuated) and a case without a prediction are counted apart.
    outcomes += [_outcome(N, 0, 0.5, 10, evacuated=True), _outcome(N + 1, 1, None, 12)]
    _store(tmp_path / "node", outcomes).close()
    out = tmp_path / "plots"
    assert hemex_main(["performance", "--data-dir", str(tmp_path / "node"), "--out", str(out),
                       "--bootstrap", str(BOOT), "--seed", str(SEED)]) == 0
    text = capsys.readouterr().out

    # The BRAIN score counts the baseline without a model too (its points are known).
    brain_labels, brain_points = np.append(labels, 1), np.append(points, 12)
    for section, truth, scores in (("model site-model 2.0", labels, probs),
                                   ("BRAIN score (Wang 2015)", brain_labels, brain_points)):
        auc, low, high = _reference_auc(truth, scores.astype(float))
        assert _printed_auc(text, section) == (round(auc, 3), round(low, 3), round(high, 3))
    predicted = probs >= 0.5
    sensitivity = (predicted & (labels == 1)).sum() / labels.sum()
    specificity = (~predicted & (labels == 0)).sum() / (labels == 0).sum()
    assert f"sensitivity {sensitivity:.3f}" in text and f"specificity {specificity:.3f}" in text
    assert "NOT clinically validated" in text and "not assessable 1 (1 evacuation reported" not in text
    assert "not assessable 1 (1 volume fell" in text
    assert "labelled baselines without an expansion probability (no model ran): 1" in text
    # Calibration: every bin's count, the counts adding up to the cases.
    counts = [int(n) for n in re.findall(r"^ {4}0\.\d\d-[01]\.\d\d +n=(\d+)", text, re.MULTILINE)]
    assert len(counts) == 5 and sum(counts) == N
    for png in ("roc-site-model-2.0-masks-hemex-threshold-1.0.0.png",
                "calibration-site-model-2.0-masks-hemex-threshold-1.0.0.png",
                "roc-brain-score-wang-2015-masks-hemex-threshold-1.0.0.png",
                "calibration-brain-score-wang-2015-masks-hemex-threshold-1.0.0.png"):
        assert (out / png).read_bytes()[:8] == PNG

    # --since/--until select baselines by their acquisition time.
    assert hemex_main(["performance", "--data-dir", str(tmp_path / "node"), "--out", str(out),
                       "--since", (T0 + timedelta(days=40)).date().isoformat(), "--bootstrap", "0"]) == 0
    assert "labelled 41;" in capsys.readouterr().out  # days 40..81: 40 labelled + the one without a model


def test_drift_warns_by_metric_log_and_mail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    labels, probs, _ = _cases()
    missed = np.where(labels == 1, 0.2, probs)  # a model that misses every expansion
    now = (T0 + timedelta(days=N + 2)).timestamp()
    smtp = SmtpReceiver.start()
    try:
        settings = load_settings(None, data_dir=tmp_path / "node", performance={
            "window_days": 365, "min_cases": 20, "min_positives": 5, "admin_email": ["admin@test.invalid"]},
            alerts={"email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
                              "sender": "hemex@test.invalid"}})
        db = _store(settings.data_dir, [_outcome(i, int(labels[i]), missed[i], None) for i in range(N)])
        caplog.set_level(logging.WARNING)
        drifts = check_drift(db, settings, now)
        by_check = {d.check: d for d in drifts}  # it misses expansions, and is miscalibrated for it
        assert set(by_check) == {"sensitivity", "calibration"} and by_check["sensitivity"].value == 0.0
        assert by_check["calibration"].value > 0.15
        assert "site performance drift" in caplog.text and "check=sensitivity" in caplog.text
        registry = CollectorRegistry()
        registry.register(ClosedLoopCollector(db))
        metrics = generate_latest(registry).decode()
        assert ('hemex_site_performance_drift{check="sensitivity",method="hemex-threshold 1.0.0",'
                'model="site-model",version="2.0"} 1.0') in metrics
        outbox = Outbox(db, settings.outbox, build_channels(settings))
        outbox.deliver_due()
        assert len(smtp.messages) == 1 and smtp.messages[0]["To"] == "admin@test.invalid"
        assert "sensitivity 0.000, below the limit 0.800" in smtp.messages[0].get_payload(decode=True).decode()
        check_drift(db, settings, now + 86400)  # still drifting: logged again, not mailed again
        outbox.deliver_due()
        assert len(smtp.messages) == 1
    finally:
        smtp.stop()


def test_too_few_cases_never_warn(tmp_path: Path) -> None:
    labels, _, _ = _cases()
    settings = load_settings(None, data_dir=tmp_path / "node", performance={"window_days": 365})
    db = _store(settings.data_dir, [_outcome(i, int(labels[i]), 0.1, None) for i in range(10)])
    assert check_drift(db, settings, (T0 + timedelta(days=20)).timestamp()) == []
