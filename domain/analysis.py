"""The typed result of analysing one study: what the report and the alert are built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from domain.brain_score import BrainScore
from domain.clinical import ClinicalVariables
from domain.measurements import HematomaMeasurements
from domain.prediction import ExpansionPrediction, RiskCategory

Completion = Literal["PARTIAL", "COMPLETE"]


@dataclass(frozen=True)
class StudyIdentity:
    """Who and what the result is about. PHI: never logged; only ``handle`` is."""

    study_uid: str
    handle: str
    patient_id: str | None
    issuer_of_patient_id: str | None
    accession_number: str | None
    patient_name: str | None
    study_datetime: str | None


@dataclass(frozen=True)
class StudyAnalysis:
    """Everything one report (preliminary or final) says about a study."""

    identity: StudyIdentity
    series_uid: str
    measurements: HematomaMeasurements
    clinical: ClinicalVariables
    prediction: ExpansionPrediction | None
    brain_score: BrainScore | None
    completion: Completion
    risk_category: RiskCategory
    software_version: str
    # Why ``prediction`` is None (no model configured, or variables it needs missing).
    prediction_unavailable: str | None = None
