"""What the report stage hands to dispatch: the files it built and what to do with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain.alerts import AlertAcknowledgement
from domain.analysis import Completion
from domain.prediction import RiskCategory


@dataclass(frozen=True)
class ReportObject:
    """One DICOM object of a report (SR, SEG, key images), validated and written."""

    name: str  # file name in the result folder, e.g. "sr.dcm"
    modality: str  # SR | SEG | KO
    sop_instance_uid: str
    path: Path


@dataclass(frozen=True)
class AlertFiles:
    """An alert the rules raised: its key (sent once per study), reasons and files."""

    key: str
    reasons: tuple[str, ...]
    payload_path: Path  # JSON for webhooks
    email_path: Path | None  # RFC 5322 message, when e-mail is configured
    # The alert group it joins (domain.alerts), whose code and link the files carry.
    acknowledgement: AlertAcknowledgement | None = None


@dataclass(frozen=True)
class ReportBundle:
    """A built report: objects in sending order (what the SR references goes first), the
    outbound ORU and the alert, each already on disk in ``folder``."""

    study_uid: str
    input_key: str
    completion: Completion
    risk_category: RiskCategory
    folder: Path
    objects: tuple[ReportObject, ...]
    # Objects of an earlier report this one references but does not send again (the
    # preliminary report's SEG, reused by the final one).
    reused_objects: tuple[ReportObject, ...] = ()
    oru_path: Path | None = None
    oru_control_id: str | None = None
    alert: AlertFiles | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def object_of(self, modality: str) -> ReportObject | None:
        """The report's object of ``modality`` (SR, SEG, KO), sent or reused, or None."""
        return next((o for o in (*self.objects, *self.reused_objects) if o.modality == modality), None)
