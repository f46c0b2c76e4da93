"""Clinical variables attached to a study, as the predictor and scores read them, and the
one list of the expansion predictor's variables."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

# Multimodal CNN Model 2 (Tanioka et al. 2024): its five variables in the model's input
# order. The model, its card, training, the report and the alert all read this one list.
PREDICTOR_VARIABLES: tuple[str, ...] = (
    "anticoagulant_use",
    "systolic_bp_mmhg",
    "diastolic_bp_mmhg",
    "pt_inr",
    "hours_onset_to_ct",
)
# Predictor variables that enter the model as 0/1 and are not standardised.
BINARY_PREDICTOR_VARIABLES: frozenset[str] = frozenset({"anticoagulant_use"})


@dataclass(frozen=True)
class ClinicalVariables:
    """Values matched to one CT study; None where nothing was found.

    Units are fixed here; conversion happens at intake (daemon/intake).
    """

    anticoagulant_use: bool | None = None
    antiplatelet_use: bool | None = None
    systolic_bp_mmhg: float | None = None
    diastolic_bp_mmhg: float | None = None
    pt_inr: float | None = None
    platelets_10e9_per_l: float | None = None
    fibrinogen_g_per_l: float | None = None
    aptt_s: float | None = None
    hemoglobin_g_per_dl: float | None = None
    wbc_10e9_per_l: float | None = None
    creatinine_umol_per_l: float | None = None
    bilirubin_umol_per_l: float | None = None
    gcs: int | None = None
    age_years: float | None = None
    sex: str | None = None
    onset_time: datetime | None = None
    hours_onset_to_ct: float | None = None
    recurrent_ich: bool | None = None

    def present(self) -> dict[str, object]:
        """The variables that have a value."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def missing(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """Those of ``names`` that have no value."""
        return tuple(n for n in names if getattr(self, n) is None)
