"""Job kind report_followup: compare a follow-up CT with its baseline and build the
follow-up report.

Input: the study's pairing (``followup_pairings``: its baseline and role), both studies'
reported analyses and masks (the same masking method and version is required for a
label), the procedures the EHR reported for the patient between the two CTs, the
baseline SR, the follow-up's own SEG and image headers.
Output: in a new result folder of the follow-up study, the follow-up SR (read back and
validated like every report object), the ORU, the expansion alert's files and
summary.json; the ``FollowupBundle`` (``followup_reports``) and a queued
``dispatch_followup`` job, committed together. Idempotent: the report is keyed by what
it was made from, so a run that finds its report made only makes sure dispatch is
queued; a run on changed inputs (a late procedure message, a final baseline report)
makes a new SR that names the previous one as its predecessor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pydicom

from daemon.alert_links import AlertLinks
from daemon.config import Settings
from daemon.jobs.wakeup import Wakeup
from daemon.report.alert_grouping import acknowledgement_for
from daemon.report.followup_alert import ALERT_KEY, prepare_followup_alert
from daemon.report.followup_oru import build_followup_oru
from daemon.report.followup_sr_builder import build_followup_report
from daemon.report.oru_builder import oru_control_id
from daemon.report.validation import validate_report_objects, write_dataset
from daemon.state.database import Database
from daemon.state.mask_files import load_mask
from daemon.state.patient_studies import patient_keys_of
from daemon.state.result_repository import StoredResult
from domain.analysis import AnalysisRecord
from domain.dicom_time import parse_dicom_datetime
from domain.durable_files import ensure_private_dir, write_atomically
from domain.errors import ReportBuildError
from domain.followup import (
    FOLLOWUP_ROLES,
    Pairing,
    Procedure,
    VolumeReading,
    is_listed,
    observe_change,
)
from domain.handles import study_handle
from domain.jobs import JobKind
from domain.outcomes import FollowupBundle, ObservedOutcome
from domain.report import AlertFiles, ReportObject
from domain.study import StudyIdentity

log = logging.getLogger(__name__)

# A follow-up whose baseline's report has not gone out yet waits this long, then looks again.
_WAIT_FOR_BASELINE_S = 5.0
ORU_FILE_NAME = "followup.oru.hl7"


@dataclass(frozen=True)
class _Inputs:
    """What one follow-up report is made from, read in one snapshot."""

    pairing: Pairing
    identity: StudyIdentity
    followup: AnalysisRecord
    followup_result: StoredResult
    baseline: AnalysisRecord
    baseline_result: StoredResult
    procedures: tuple[Procedure, ...]
    previous_sr: Path | None
    image_paths: tuple[Path, ...]

    @property
    def input_key(self) -> str:
        """What the comparison depends on: the pairing, the baseline's report (its
        prediction may come with its final report), the follow-up's measurement (not its
        report: a final one after a preliminary measures the same mask) and the procedures."""
        m = self.followup.analysis.measurements
        digest = hashlib.sha256(json.dumps([
            self.pairing.baseline_study_uid, self.pairing.role.value, self.pairing.sequence,
            self.baseline.input_key, self.followup.series_uid, m.voxel_count, m.volume_ml, m.method_name,
            m.method_version, [(p.code_system, p.code, p.performed_at.isoformat()) for p in self.procedures]]).encode())
        return f"{JobKind.REPORT_FOLLOWUP.value}:{digest.hexdigest()[:32]}"


def _acquired(record: AnalysisRecord) -> datetime:
    acquired = record.analysis.acquired_at or parse_dicom_datetime(record.analysis.identity.study_datetime)
    if acquired is None:
        raise ReportBuildError(f"study {record.analysis.identity.handle} has no acquisition time")
    return acquired


def _reading(record: AnalysisRecord) -> VolumeReading:
    """The hematoma volume of a reported analysis, with its intraventricular volume when the
    method separated it (read from the analysis' mask)."""
    m = record.analysis.measurements
    ivh_ml = None
    try:
        geometry, mask = load_mask(record.mask_folder or record.folder)
    except FileNotFoundError:
        log.warning("mask no longer on disk study=%s: intraventricular volume unknown",
                    record.analysis.identity.handle)
    else:
        if mask.intraventricular is not None:
            ivh_ml = float(mask.intraventricular.sum()) * geometry.voxel_volume_ml
    return VolumeReading(m.volume_ml, m.method_name, m.method_version, _acquired(record), ivh_ml)


class FollowupReportStage:
    """Runs ``report_followup`` jobs."""

    def __init__(self, settings: Settings, db: Database, wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time, links: AlertLinks | None = None) -> None:
        self._settings = settings
        self._db = db
        self._wakeup = wakeup
        self._clock = clock
        self._links = links

    def report_followup(self, study_uid: str) -> float | None:
        """Build the follow-up report of ``study_uid``; returns a delay to run again after
        while its baseline's report has not gone out yet.

        Raises
        ------
        ReportBuildError
            The SR could not be built or failed validation (nothing is sent).
        """
        inputs = self._inputs(study_uid)
        if inputs is None:
            return None
        if isinstance(inputs, float):
            return inputs
        with self._db.reading() as repos:
            made = repos.followups.report_made_from(inputs.input_key)
        if made is None:
            bundle = self._build(inputs)
            with self._db.transaction() as repos:
                repos.followups.add_report(bundle, self._clock())
        now = self._clock()
        with self._db.transaction() as repos:
            repos.jobs.enqueue(JobKind.DISPATCH_FOLLOWUP, study_uid, now, now)
        if self._wakeup is not None:
            self._wakeup.notify()
        return None

    def _inputs(self, study_uid: str) -> _Inputs | float | None:
        handle = study_handle(study_uid)
        with self._db.reading() as repos:
            pairing = repos.followups.pairing(study_uid)
            if pairing is None or pairing.role not in FOLLOWUP_ROLES or pairing.baseline_study_uid is None:
                log.info("follow-up report skipped study=%s reason=not a follow-up (any more)", handle)
                return None
            followup = repos.analyses.latest_reported(study_uid)
            baseline = repos.analyses.latest_reported(pairing.baseline_study_uid)
            if followup is None or baseline is None:
                log.info("follow-up report waits study=%s reason=a report has not gone out yet", handle)
                return _WAIT_FOR_BASELINE_S
            followup_result = repos.results.made_from(followup.input_key)
            baseline_result = repos.results.made_from(baseline.input_key)
            assert followup_result is not None and baseline_result is not None  # latest_reported has one
            identity = repos.studies.identity(study_uid)
            window = (_acquired(baseline), _acquired(followup))
            procedures = tuple(p for p in repos.clinical.procedures_between(patient_keys_of(repos, identity), *window)
                               if is_listed(p, self._settings.followup.evacuation_procedure_codes))
            previous = repos.followups.latest_dispatched_report(study_uid)
            paths = tuple(repos.images.paths_of_series(followup.series_uid))
        previous_sr = previous.objects[0].path if previous is not None and previous.objects else None
        return _Inputs(pairing, identity, followup, followup_result, baseline, baseline_result, procedures,
                       previous_sr, paths)

    def _build(self, inputs: _Inputs) -> FollowupBundle:
        settings, now = self._settings, self._clock()
        baseline, followup = inputs.baseline, inputs.followup
        change = observe_change(_reading(baseline), _reading(followup), settings.followup.rules(), inputs.procedures)
        outcome = ObservedOutcome(
            baseline_study_uid=baseline.study_uid, baseline_handle=baseline.analysis.identity.handle,
            followup_study_uid=followup.study_uid, followup_handle=inputs.identity.handle,
            baseline_acquired_at=_acquired(baseline), followup_acquired_at=_acquired(followup),
            role=inputs.pairing.role, change=change,
            method_name=baseline.analysis.measurements.method_name,
            method_version=baseline.analysis.measurements.method_version,
            followup_method_name=followup.analysis.measurements.method_name,
            followup_method_version=followup.analysis.measurements.method_version,
            prediction=baseline.analysis.prediction,
            brain_points=baseline.analysis.brain_score.points if baseline.analysis.brain_score else None,
            software_version=followup.analysis.software_version)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now)) + f"{now % 1:.3f}"[1:]
        folder = ensure_private_dir(settings.results_dir / inputs.identity.handle / f"{stamp}-followup")
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in inputs.image_paths]
        seg_path = inputs.followup_result.seg_path
        sr = build_followup_report(
            outcome, followup.series_uid, headers,
            pydicom.dcmread(seg_path) if seg_path is not None and seg_path.is_file() else None,
            self._read(inputs.baseline_result.sr_path, "baseline SR"), settings.report,
            settings.followup.sr_series_number, outcome.software_version,
            predecessor_sr=self._read(inputs.previous_sr, "previous follow-up SR") if inputs.previous_sr else None)
        if settings.report.validate_with_dicom3tools:
            validate_report_objects([sr], timeout_s=settings.report.validation_timeout_s)
        write_dataset(sr, folder / "followup-sr.dcm")
        oru_path, control_id = self._write_oru(inputs.identity, outcome, folder)
        alert = self._write_alert(inputs.identity, outcome)
        summary = {"study_handle": inputs.identity.handle, "baseline_handle": outcome.baseline_handle,
                   "role": outcome.role.value, "change": asdict(change), "status": change.status,
                   "method": f"{outcome.method_name} {outcome.method_version}",
                   "software_version": outcome.software_version}
        write_atomically(folder / "followup-summary.json", json.dumps(summary, indent=2, default=str).encode())
        log.info("follow-up report built study=%s baseline=%s role=%s change_ml=%.1f expansion=%s revised=%s",
                 inputs.identity.handle, outcome.baseline_handle, outcome.role.value, change.change_ml,
                 change.expansion, change.revised_expansion)
        return FollowupBundle(
            study_uid=followup.study_uid, baseline_study_uid=baseline.study_uid, input_key=inputs.input_key,
            folder=folder, outcome=outcome,
            objects=(ReportObject("followup-sr.dcm", "SR", str(sr.SOPInstanceUID), folder / "followup-sr.dcm"),),
            oru_path=oru_path, oru_control_id=control_id, alert=alert)

    @staticmethod
    def _read(path: Path, what: str) -> pydicom.Dataset:
        try:
            return pydicom.dcmread(path)
        except FileNotFoundError as exc:
            raise ReportBuildError(f"the {what} is no longer on disk (retention?): {path.name}") from exc

    def _write_oru(self, identity: StudyIdentity, outcome: ObservedOutcome,
                   folder: Path) -> tuple[Path | None, str | None]:
        hl7 = self._settings.hl7
        if not hl7.enabled or hl7.outbound_host is None:
            return None, None
        message = build_followup_oru(identity, outcome, hl7, outcome.software_version)
        write_atomically(folder / ORU_FILE_NAME, message)
        return folder / ORU_FILE_NAME, oru_control_id(message)

    def _write_alert(self, identity: StudyIdentity, outcome: ObservedOutcome) -> AlertFiles | None:
        """The expansion alert, when expansion happened (either definition) and it was not
        sent for this follow-up study before."""
        settings = self._settings
        if not settings.followup.alert_on_expansion or not (outcome.change.expansion
                                                            or outcome.change.revised_expansion):
            return None
        with self._db.reading() as repos:
            if repos.alerts.raised(identity.study_uid, ALERT_KEY):
                return None
        ack = None if self._links is None else acknowledgement_for(
            self._db, identity, self._links, settings.alerts.acknowledgement, self._clock())
        return prepare_followup_alert(identity, outcome, settings.alerts, settings.results_dir,
                                      outcome.software_version, ack)
