"""The typed result of analysing one study: what the report and the alert are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from domain.brain_score import BrainScore
from domain.clinical import ClinicalVariables, Provenance
from domain.measurements import HematomaMeasurements
from domain.prediction import ExpansionPrediction, RiskCategory
from domain.study import SkippedSeries, StudyIdentity

Completion = Literal["PARTIAL", "COMPLETE"]


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
    # Where each clinical value came from (variable name -> provenance; no PHI).
    clinical_sources: dict[str, Provenance] = field(default_factory=dict)
    # Series of the study not analysed, each with the reason (selection rules).
    skipped_series: tuple[SkippedSeries, ...] = ()
    # Seconds spent in each step of the analysis (select, load, volume, mask, ...).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # When the analysed series was acquired (naive local time; the follow-up windows use it).
    acquired_at: datetime | None = None


@dataclass(frozen=True)
class AnalysisRecord:
    """An analysis as the analyse stage hands it on: what it was made from and where its
    mask lies (``folder``/mask.npz), keyed by ``input_key`` so that a job run again finds it."""

    input_key: str
    study_uid: str
    series_uid: str
    folder: Path
    analysis: StudyAnalysis
    created_at: float
    # Where mask.npz lies: ``folder``, or the earlier report's folder whose mask (and SEG)
    # a final report reuses.
    mask_folder: Path | None = None

    @property
    def reuses_earlier_mask(self) -> bool:
        return self.mask_folder is not None and self.mask_folder != self.folder
