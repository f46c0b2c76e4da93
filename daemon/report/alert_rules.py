"""When a study raises an alert to on-call staff."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config import AlertSettings
from domain.analysis import StudyAnalysis

REASON_VOLUME = "hematoma_volume"
REASON_EXPANSION_RISK = "high_expansion_risk"
# The study's "not analysed" notice went out, and now it was analysed after all.
REASON_AFTER_NOTICE = "analysed_after_notice"
AFTER_NOTICE_KEY = "analysed-after-notice"
# The key of the "not analysed" alert (daemon/report/notice_alert.py).
NOT_ANALYSED_KEY = "not-analysed"


@dataclass(frozen=True)
class AlertDecision:
    """A rule fired. ``key`` is recorded per study: an alert with a key already sent for
    that study is not sent again.

    The key carries the expansion-risk category (``high``/``low`` from validated weights,
    ``unknown`` otherwise), so a later report re-alerts only when that category changed.
    """

    key: str
    reasons: tuple[str, ...]
    risk_category: str

    def __post_init__(self) -> None:
        if not self.reasons:
            raise ValueError("an alert decision needs at least one reason")


def _validated_category(analysis: StudyAnalysis) -> str:
    # Only a clinically validated prediction has a category staff may act on.
    prediction = analysis.prediction
    if prediction is None or not prediction.clinically_validated:
        return "unknown"
    return analysis.risk_category if analysis.risk_category in ("high", "low") else "unknown"


def decide_alert(analysis: StudyAnalysis, settings: AlertSettings,
                 after_notice: bool = False) -> AlertDecision | None:
    """The alert this analysis raises, or None.

    Fires when the planimetry volume is at least ``min_volume_ml``, or (with
    ``on_high_expansion_risk``) when a clinically validated prediction puts the study in
    the ``high`` risk category. An unvalidated prediction never raises a risk alert.
    ``after_notice``: the study's "not analysed" alert went out before, so (with
    ``on_not_analysed``) staff hear that it was analysed after all.
    """
    category = _validated_category(analysis)
    reasons = []
    if analysis.measurements.volume_ml >= settings.min_volume_ml:
        reasons.append(REASON_VOLUME)
    if settings.on_high_expansion_risk and category == "high":
        reasons.append(REASON_EXPANSION_RISK)
    if after_notice and settings.on_not_analysed:
        reasons.append(REASON_AFTER_NOTICE)
    if not reasons:
        return None
    key = AFTER_NOTICE_KEY if reasons == [REASON_AFTER_NOTICE] else f"ich-alert:risk={category}"
    return AlertDecision(key=key, reasons=tuple(reasons), risk_category=category)
