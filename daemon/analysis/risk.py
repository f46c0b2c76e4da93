"""Risk category from a prediction, honest about where the prediction came from."""

from __future__ import annotations

from daemon.analysis.study_analysis import RiskCategory
from inference.prediction import ExpansionPrediction

# The variables of Multimodal CNN Model 2 (Tanioka et al. 2024), in the model's order.
PREDICTOR_VARIABLES: tuple[str, ...] = (
    "anticoagulant_use",
    "systolic_bp_mmhg",
    "diastolic_bp_mmhg",
    "pt_inr",
    "hours_onset_to_ct",
)


NO_MODEL_CONFIGURED = "no validated expansion model configured"


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
