"""An expansion prediction with everything a report must say about where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RiskCategory = Literal["high", "low", "not_validated", "unavailable"]

NO_MODEL_CONFIGURED = "no validated expansion model configured"


@dataclass(frozen=True)
class ExpansionPrediction:
    """One prediction, with everything a report must say about where it came from.

    ``clinically_validated`` is True only when the weights' model card says they were
    trained and validated on real patient data for this intended use; otherwise the
    report and alert must present the value as not for clinical use.

    ``outside_published_domain`` says, one plain-English sentence each, how this input
    departs from the data the model's authors published it on (slices thicker than
    theirs, an automatic mask where theirs were drawn by experts, an image-only
    fallback, ...); empty when it does not. The SR and the alert must carry each one.
    """

    probability: float
    model_name: str
    model_version: str
    weights_origin: str
    clinically_validated: bool
    variables_used: tuple[str, ...]
    variables_missing: tuple[str, ...]
    image_only_fallback: bool
    notes: tuple[str, ...] = field(default_factory=tuple)
    outside_published_domain: tuple[str, ...] = field(default_factory=tuple)


def prediction_unavailable_reason(model_configured: bool, missing: tuple[str, ...]) -> str:
    """Why no expansion probability was made, in the words the SR and alert use."""
    if not model_configured:
        return NO_MODEL_CONFIGURED
    return ("expansion model not run: clinical variables missing ("
            + ", ".join(missing) + ") and no image-only model configured")


def risk_category(prediction: ExpansionPrediction | None, threshold: float) -> RiskCategory:
    """``high``/``low`` only for clinically validated weights; otherwise say why not."""
    if prediction is None:
        return "unavailable"
    if not prediction.clinically_validated:
        return "not_validated"
    return "high" if prediction.probability >= threshold else "low"
