"""Job kinds analyse_study, finalise_study and replay_study: from spooled images to a
stored analysis, handed to the report stage.

Inputs: the study's complete series (spool files and rows), its clinical data.
Output: an ``analyses`` row (``domain.analysis.AnalysisRecord``) with ``mask.npz`` in
its result folder, and a queued ``report_study`` job, committed together.

select series -> build volume -> mask -> measure -> match clinical data -> predict ->
BRAIN score. Each step is timed; the timings go to the log and the result's summary.
Each run is idempotent: its input key (job kind + digest of the chosen series' images)
is stored with the analysis, and a run that finds its analysis stored (it crashed after
the commit) only makes sure the report job is queued.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from daemon.analyse.clinical_match import match_clinical
from daemon.analyse.series_selection import SeriesCandidate, decide_study, select_series
from daemon.config import Settings
from daemon.jobs.wakeup import Wakeup
from daemon.stage_timer import StageTimer
from daemon.state.database import Database
from daemon.state.mask_files import load_mask, save_mask
from domain.analysis import AnalysisRecord, Completion, StudyAnalysis
from domain.clinical import PREDICTOR_VARIABLES, ClinicalVariables, MatchedClinical
from domain.dicom_time import first_datetime, parse_dicom_datetime
from domain.durable_files import ensure_private_dir
from domain.errors import NoAnalysableSeriesError
from domain.handles import study_handle
from domain.imaging import CTVolume, HematomaMask
from domain.jobs import JobKind, JobState
from domain.prediction import prediction_unavailable_reason, risk_category
from domain.study import SeriesSelection, StudyEvent, StudyIdentity
from domain.version import __version__
from inference.masking.base import HematomaMasker
from inference.measurements import measure_hematoma
from inference.prediction import ExpansionPredictor
from inference.scores.brain_score import compute_brain_score
from inference.series_to_volume import volume_from_datasets

log = logging.getLogger(__name__)

# A final report waits for its preliminary report while this is how long a study's
# pipeline (analyse -> report -> dispatch) is still working on it.
_WAIT_FOR_PRELIMINARY_S = 1.0
_PIPELINE = (JobKind.ANALYSE_STUDY, JobKind.REPLAY_STUDY, JobKind.REPORT_STUDY, JobKind.DISPATCH_REPORT)


def acquisition_time(ds: Dataset) -> datetime | None:
    """CT acquisition time: AcquisitionDateTime, else Acquisition, Series or Study date+time."""
    def joined(date_kw: str, time_kw: str) -> str:
        return str(ds.get(date_kw, "") or "") + str(ds.get(time_kw, "") or "")

    return first_datetime(str(ds.get("AcquisitionDateTime", "") or ""), joined("AcquisitionDate", "AcquisitionTime"),
                          joined("SeriesDate", "SeriesTime"), joined("StudyDate", "StudyTime"))


def result_folder(results_dir: Path, handle: str, completion: Completion, now: float) -> Path:
    """A new folder for one report of a study (``<handle>/<time>-preliminary|final``)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now)) + f"{now % 1:.3f}"[1:]
    return results_dir / handle / f"{stamp}-{'final' if completion == 'COMPLETE' else 'preliminary'}"


class AnalyseStage:
    """Holds the loaded masker and predictor (kept warm) and runs the analysis jobs."""

    def __init__(self, settings: Settings, db: Database, masker: HematomaMasker,
                 predictor: ExpansionPredictor | None, wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._db = db
        self._masker = masker
        self._predictor = predictor
        self._wakeup = wakeup
        self._clock = clock

    # --- job handlers -----------------------------------------------------------------
    def analyse_study(self, study_uid: str) -> float | None:
        """Analyse the study's best complete series, unless it was analysed before;
        PARTIAL (preliminary) when clinical variables are still missing.

        Takes the study-level decision again (``decide_study``): waits while a thinner
        series is still arriving; when no series can be analysed, asks to run again
        until the study has settled (``series.study_settle_s`` after its last image),
        then marks it ``no_series`` and queues its "not analysed" notice.

        Raises
        ------
        UnsupportedSeriesError
            The chosen series' geometry cannot be used.
        """
        return self._analyse(study_uid, JobKind.ANALYSE_STUDY, study_level=True)

    def replay_study(self, study_uid: str) -> float | None:
        """``hemex replay``: analyse again from the stored images, whatever was made before."""
        self._analyse(study_uid, JobKind.REPLAY_STUDY, salt=f":{self._clock():.6f}")
        return None

    def finalise_study(self, study_uid: str) -> float | None:
        """Final report (COMPLETE) that reuses its preliminary report's mask and SEG.

        Returns a delay to run again after when the preliminary report is still on its
        way (clinical data can arrive while the study is being analysed).
        """
        with self._db.reading() as repos:
            latest = repos.results.latest(study_uid)
            in_progress = any(repos.jobs.state_of(kind, study_uid) in (JobState.PENDING, JobState.RUNNING)
                              for kind in _PIPELINE)
        if latest is None or latest.status == "COMPLETE":
            if latest is None and in_progress:
                log.info("finalise waits for the preliminary report study=%s", study_handle(study_uid))
                return _WAIT_FOR_PRELIMINARY_S
            log.info("finalise skipped study=%s reason=%s", study_handle(study_uid),
                     "no preliminary result" if latest is None else "already final")
            return None
        self._analyse(study_uid, JobKind.FINALISE_STUDY, completion="COMPLETE", reuse_mask_of=latest.folder)
        return None

    # --- the analysis -------------------------------------------------------------------
    def _analyse(self, study_uid: str, kind: JobKind, completion: Completion | None = None,
                 reuse_mask_of: Path | None = None, salt: str = "", study_level: bool = False) -> float | None:
        timer = StageTimer()
        with self._db.reading() as repos:
            identity = repos.studies.identity(study_uid)
            series = repos.images.series_of_study(study_uid)
            last_received_at = repos.studies.last_received_at(study_uid)
        with timer.stage("select"):
            candidates = [(s.complete, SeriesCandidate(s.series_uid, s.instance_count,
                                                       pydicom.dcmread(s.sample_path, stop_before_pixels=True)))
                          for s in series]
            complete = [c for done, c in candidates if done]
            selection = select_series(complete, self._settings.selection)
        if study_level:
            decision = decide_study(complete, [c for done, c in candidates if not done], self._settings.selection)
            if decision.action == "wait":
                log.info("analysis waits study=%s reason=%s", identity.handle, decision.reason)
                return None
            if decision.action == "nothing_usable":
                settled_at = (last_received_at or 0.0) + self._settings.series.study_settle_s
                if self._clock() < settled_at:
                    return settled_at - self._clock()
                self._not_analysable(identity, selection)
                return None
        for skipped in selection.skipped:
            log.info("series skipped study=%s series=%s reason=%s", identity.handle,
                     study_handle(skipped.series_uid), skipped.reason)
        if selection.chosen_series_uid is None:
            raise NoAnalysableSeriesError("no series meets the selection rules: " + selection.reasons)
        series_uid = selection.chosen_series_uid
        with self._db.reading() as repos:
            input_key = f"{kind.value}:{repos.images.digest_of_series(series_uid)}{salt}"
            stored = repos.analyses.by_input_key(input_key)
            paths = repos.images.paths_of_series(series_uid)
        if stored is not None:
            log.info("analysis already stored study=%s series=%s: report queued", identity.handle,
                     study_handle(series_uid))
            self._hand_on(study_uid)
            return None
        with self._db.transaction() as repos:
            repos.studies.record_event(study_uid, StudyEvent.ANALYSIS_STARTED, self._clock())
        with timer.stage("load"):
            datasets = [pydicom.dcmread(path) for path in paths]
        with timer.stage("volume"):
            volume = volume_from_datasets(datasets, self._settings.volume)
        ct_time = acquisition_time(datasets[0])
        del datasets  # the pixels are in the volume now; the report reads headers again
        with timer.stage("mask"):
            mask = self._mask(volume, reuse_mask_of, identity.handle)
        with timer.stage("measure"):
            measurements = measure_hematoma(volume, mask)
        with timer.stage("clinical"):
            matched = self._clinical(identity, ct_time)
        clinical = matched.variables
        prediction = None
        if self._predictor is not None:
            with timer.stage("predict"):
                prediction = self._predictor.predict(volume, mask, clinical)
        brain = compute_brain_score(volume_ml=measurements.volume_ml, recurrent_ich=clinical.recurrent_ich,
                                    anticoagulation=clinical.anticoagulant_use,
                                    intraventricular_extension=measurements.intraventricular_extension,
                                    hours_onset_to_ct=clinical.hours_onset_to_ct)
        missing = clinical.missing(PREDICTOR_VARIABLES)
        if completion is None:
            waits = missing and self._settings.hl7.enabled and self._settings.hl7.wait_for_clinical_s > 0
            completion = "PARTIAL" if waits else "COMPLETE"
        analysis = StudyAnalysis(
            identity=identity, series_uid=series_uid, measurements=measurements, clinical=clinical,
            prediction=prediction, brain_score=brain, completion=completion,
            risk_category=risk_category(prediction, self._settings.prediction.risk_threshold),
            software_version=__version__,
            prediction_unavailable=None if prediction is not None else prediction_unavailable_reason(
                self._predictor is not None, missing),
            clinical_sources=dict(matched.provenance), skipped_series=selection.skipped,
            stage_seconds=timer.seconds, acquired_at=ct_time,
        )
        now = self._clock()
        folder = ensure_private_dir(result_folder(self._settings.results_dir, identity.handle, completion, now))
        save_mask(folder, volume.geometry, mask)
        with self._db.transaction() as repos:
            repos.analyses.add(AnalysisRecord(input_key, study_uid, series_uid, folder, analysis, now,
                                              mask_folder=reuse_mask_of or folder))
            repos.jobs.enqueue(JobKind.REPORT_STUDY, study_uid, now, now)
        log.info("study analysed study=%s completion=%s volume_ml=%.1f risk=%s missing=%s stages=%s",
                 identity.handle, completion, measurements.volume_ml, analysis.risk_category,
                 ",".join(missing) or "-", json.dumps(timer.seconds))
        if self._wakeup is not None:
            self._wakeup.notify()
        return None

    def _not_analysable(self, identity: StudyIdentity, selection: SeriesSelection) -> None:
        """No series can be analysed and none is arriving: ``no_series`` and the notice."""
        now = self._clock()
        reason = "no series meets the selection rules: " + (selection.reasons or "no complete series")
        with self._db.transaction() as repos:
            repos.studies.record_event(identity.study_uid, StudyEvent.NO_SERIES, now, reason)
            repos.jobs.enqueue(JobKind.NOTIFY_NOT_ANALYSED, identity.study_uid, now, now)
        log.info("study not analysable study=%s reason=%s", identity.handle, reason)
        if self._wakeup is not None:
            self._wakeup.notify()

    def _mask(self, volume: CTVolume, reuse_mask_of: Path | None, handle: str) -> HematomaMask:
        """The mask of ``volume``: the earlier report's when it lies on the same images (a
        final report must measure the mask its reused SEG shows), else masked now."""
        if reuse_mask_of is not None:
            try:
                geometry, mask = load_mask(reuse_mask_of)
            except FileNotFoundError:
                log.warning("preliminary mask missing study=%s: masking again", handle)
            else:
                if geometry.sop_instance_uids == volume.sop_instance_uids:
                    return mask
                log.warning("preliminary mask on other images study=%s: masking again", handle)
        return self._masker.segment(volume)

    def _clinical(self, identity: StudyIdentity, ct_time: datetime | None) -> MatchedClinical:
        if not self._settings.hl7.enabled:
            return MatchedClinical(ClinicalVariables(), {})
        with self._db.reading() as repos:
            matched = match_clinical(repos, identity, ct_time or parse_dicom_datetime(identity.study_datetime),
                                     self._settings.hl7)
        log.info("clinical match study=%s found=%s", identity.handle, ",".join(sorted(matched.provenance)) or "-")
        return matched

    def _hand_on(self, study_uid: str) -> None:
        now = self._clock()
        with self._db.transaction() as repos:
            repos.jobs.enqueue(JobKind.REPORT_STUDY, study_uid, now, now)
        if self._wakeup is not None:
            self._wakeup.notify()
