"""A baseline's prediction beside what its follow-up CT showed, and the follow-up report
that carries it from the report stage to dispatch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from domain.followup import ObservedChange, Role
from domain.prediction import ExpansionPrediction
from domain.report import AlertFiles, ReportObject


@dataclass(frozen=True)
class ObservedOutcome:
    """One baseline CT's prediction (or its absence) and the change its follow-up showed.

    Performance is counted per model (``prediction.model_name``/``model_version``) and
    per masking method (``method_name``/``method_version``, the baseline's, which the
    follow-up must share for a label).
    """

    baseline_study_uid: str
    baseline_handle: str
    followup_study_uid: str
    followup_handle: str
    baseline_acquired_at: datetime
    followup_acquired_at: datetime
    role: Role  # followup (the outcome) or later_followup (reported, not counted)
    change: ObservedChange
    method_name: str
    method_version: str
    followup_method_name: str
    followup_method_version: str
    prediction: ExpansionPrediction | None
    brain_points: int | None
    software_version: str

    @property
    def label(self) -> int | None:
        """1 expansion, 0 none, None not assessable (the volume rule)."""
        return None if self.change.expansion is None else int(self.change.expansion)


@dataclass(frozen=True)
class FollowupBundle:
    """A built follow-up report: the SR, the ORU and the alert, on disk in ``folder``."""

    study_uid: str  # the follow-up study
    baseline_study_uid: str
    input_key: str
    folder: Path
    outcome: ObservedOutcome
    objects: tuple[ReportObject, ...]
    oru_path: Path | None = None
    oru_control_id: str | None = None
    alert: AlertFiles | None = None
