"""What the console's pages show, read through the repositories in one snapshot each.

Typed view records only; the templates format them. Nothing here writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

from daemon.report.alert_files import alert_paths
from daemon.report.report_job import KEY_IMAGE_PNG
from daemon.state.alert_repository import RaisedAlert
from daemon.state.repositories import Repositories
from daemon.state.result_repository import StoredResult
from domain.analysis import StudyAnalysis
from domain.clinical import PREDICTOR_VARIABLES, VARIABLES, ClinicalVariables, Provenance
from domain.delivery import Delivery, DeliveryState
from domain.study import StudyStatus

# UCUM units as a reader writes them; variables whose unit is in their name get it here.
_DISPLAY_UNITS = {"mm[Hg]": "mmHg", "{INR}": "", "{score}": "", "10*9/L": "x10^9/L"}
_UNITLESS_UNITS = {"hours_onset_to_ct": "h", "age_years": "years"}


@dataclass(frozen=True)
class RiskView:
    """The expansion risk as the console states it, and how much it may be trusted."""

    label: str  # e.g. "high (62%)", "42% - not validated", "not available"
    status: str  # "validated" | "not_validated" | "unavailable"
    detail: str  # model and version, or why there is no prediction


@dataclass(frozen=True)
class StudyRow:
    """One line of the studies page."""

    status: StudyStatus
    analysis: StudyAnalysis | None
    risk: RiskView | None
    deliveries: dict[str, int]  # state -> count
    alerts: tuple[str, ...]


@dataclass(frozen=True)
class ClinicalValue:
    """A clinical variable as matched to the study, with where and when it came from."""

    name: str
    value: str
    unit: str
    source: Provenance | None
    predictor: bool  # one of the expansion model's inputs


@dataclass(frozen=True)
class StudyDetail:
    """The study page."""

    status: StudyStatus
    analysis: StudyAnalysis | None
    risk: RiskView | None
    clinical: tuple[ClinicalValue, ...]
    missing_predictor_variables: tuple[str, ...]
    key_image: Path | None
    result: StoredResult | None
    deliveries: tuple[Delivery, ...]
    alerts: tuple[RaisedAlert, ...]


@dataclass(frozen=True)
class AlertRow:
    """One raised alert with its study, what it said, and how its deliveries went."""

    alert: RaisedAlert
    status: StudyStatus | None
    reasons: tuple[str, ...]  # as the alert sent them (its stored payload)
    volume_ml: float | None
    deliveries: tuple[Delivery, ...]


def risk_view(analysis: StudyAnalysis) -> RiskView:
    """The expansion risk in words: a category only from clinically validated weights."""
    prediction = analysis.prediction
    if prediction is None:
        return RiskView("not available", "unavailable", analysis.prediction_unavailable or "no prediction made")
    model = f"{prediction.model_name} {prediction.model_version}"
    if not prediction.clinically_validated:
        return RiskView(f"{prediction.probability:.0%} - not validated", "not_validated",
                        f"{model}; weights not clinically validated: research output only")
    return RiskView(f"{analysis.risk_category} ({prediction.probability:.0%})", "validated",
                    f"{model}; clinically validated weights")


def studies_overview(repos: Repositories, since: float) -> list[StudyRow]:
    """Studies changed since ``since``, most recent first, with their newest analysis."""
    statuses = repos.studies.recent(since)
    uids = [s.identity.study_uid for s in statuses]
    analyses = repos.analyses.latest_of(uids)
    deliveries = repos.outbox.counts_by_study(uids)
    rows = []
    for status in statuses:
        uid = status.identity.study_uid
        record = analyses.get(uid)
        analysis = record.analysis if record is not None else None
        rows.append(StudyRow(status, analysis, risk_view(analysis) if analysis else None,
                             deliveries.get(uid, {}), tuple(repos.alerts.keys_of(uid))))
    return rows


def study_detail(repos: Repositories, handle: str) -> StudyDetail | None:
    """Everything the study page shows, or None for an unknown handle."""
    status = repos.studies.by_handle(handle)
    if status is None:
        return None
    uid = status.identity.study_uid
    record = repos.analyses.latest_of([uid]).get(uid)
    analysis = record.analysis if record is not None else None
    key_image = record.folder / KEY_IMAGE_PNG if record is not None else None
    return StudyDetail(
        status=status, analysis=analysis, risk=risk_view(analysis) if analysis else None,
        clinical=clinical_values(analysis) if analysis else (),
        missing_predictor_variables=analysis.clinical.missing(PREDICTOR_VARIABLES) if analysis else (),
        key_image=key_image if key_image is not None and key_image.is_file() else None,
        result=repos.results.latest(uid), deliveries=tuple(repos.outbox.items(study_uid=uid)),
        alerts=tuple(repos.alerts.of_study(uid)))


def clinical_values(analysis: StudyAnalysis) -> tuple[ClinicalValue, ...]:
    """Every clinical variable with a value, predictor inputs first, each with its source."""
    present = analysis.clinical.present()
    order = [*PREDICTOR_VARIABLES, *(f.name for f in fields(ClinicalVariables) if f.name not in PREDICTOR_VARIABLES)]
    values = []
    for name in order:
        if name not in present:
            continue
        spec = VARIABLES.get(name)
        unit = _DISPLAY_UNITS.get(spec.unit, spec.unit) if spec else _UNITLESS_UNITS.get(name, "")
        values.append(ClinicalValue(name, _format(present[name]), unit, analysis.clinical_sources.get(name),
                                    name in PREDICTOR_VARIABLES))
    return tuple(values)


def dead_letters(repos: Repositories) -> list[Delivery]:
    """Deliveries that failed for good, oldest first."""
    return repos.outbox.items(state=DeliveryState.DEAD)


def pending_deliveries(repos: Repositories) -> list[Delivery]:
    """Deliveries still being tried, oldest first."""
    return repos.outbox.items(state=DeliveryState.PENDING)


def handles_of(repos: Repositories, deliveries: list[Delivery]) -> dict[str, str]:
    """Study UID -> handle for the studies of ``deliveries`` (links, no UID on screen)."""
    handles = {}
    for uid in {d.study_uid for d in deliveries if d.study_uid}:
        status = repos.studies.find(uid)
        if status is not None:
            handles[uid] = status.identity.handle
    return handles


def recent_alerts(repos: Repositories, since: float, results_dir: Path) -> list[AlertRow]:
    """Alerts raised since ``since``, newest first, with their study and deliveries."""
    rows = []
    for alert in repos.alerts.raised_since(since):
        item_key = f"{alert.study_uid}:{alert.alert_key}"  # as daemon/dispatch/alert_queue.py queues them
        deliveries = tuple(d for d in repos.outbox.items(study_uid=alert.study_uid) if d.item_key == item_key)
        status = repos.studies.find(alert.study_uid)
        reasons, volume = _sent_payload(results_dir, status, alert)
        rows.append(AlertRow(alert, status, reasons, volume, deliveries))
    return rows


def _sent_payload(results_dir: Path, status: StudyStatus | None,
                  alert: RaisedAlert) -> tuple[tuple[str, ...], float | None]:
    """The reasons and volume the alert's stored payload states (empty once purged)."""
    if status is None:
        return (), None
    payload_path, _ = alert_paths(results_dir, status.identity.handle, alert.alert_key)
    try:
        payload = json.loads(payload_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (), None
    volume = payload.get("hematoma", {}).get("volume_ml")
    return tuple(str(r) for r in payload.get("reasons", [])), float(volume) if volume is not None else None


def _format(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
