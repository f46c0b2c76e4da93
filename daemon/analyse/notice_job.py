"""Job kind notify_not_analysed: tell PACS, the EHR and on-call staff that a study's CT
was not analysed, and why, so that no doctor waits for a result that will not come.

Queued with the study's ``no_series`` or ``failed`` state (by the analysis job when no
series can be analysed and the study has settled, or by the job runner when a study job
failed for good). Builds the notice SR (validated like every report), an ORU^R01 and the
``not-analysed`` alert, then records and queues them in ONE transaction, as dispatch does
for a report. Sent once per study and reason (the input key); a notice with another
reason, or a report from a usable series that arrives later, names it as predecessor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom

from daemon.analyse.series_selection import SeriesCandidate, rejection_reason
from daemon.audit_log import AuditLog
from daemon.config import Settings
from daemon.dispatch.dispatch_job import record_and_queue
from daemon.jobs.wakeup import Wakeup
from daemon.report.notice_alert import prepare_notice_alert
from daemon.report.notice_builder import build_not_analysed_sr
from daemon.report.oru_builder import ORU_FILE_NAME, build_not_analysed_oru, oru_control_id
from daemon.report.validation import validate_report_objects, write_dataset
from daemon.report.warm_validator import WarmSrValidator
from daemon.state.database import Database
from daemon.state.image_repository import SeriesOfStudy
from domain.durable_files import ensure_private_dir, write_atomically
from domain.notice import NotAnalysedNotice, SeriesReceived
from domain.report import ReportBundle, ReportObject
from domain.study import StudyState
from domain.version import __version__

log = logging.getLogger(__name__)

NOTICE_STATES = (StudyState.NO_SERIES, StudyState.FAILED)


class NoticeStage:
    """Runs ``notify_not_analysed`` jobs; ``outbox_wakeup`` starts deliveries at once."""

    def __init__(self, settings: Settings, db: Database, audit: AuditLog, outbox_wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time, sr_validator: WarmSrValidator | None = None) -> None:
        self._sr_validator = sr_validator
        self._settings = settings
        self._db = db
        self._audit = audit
        self._outbox_wakeup = outbox_wakeup
        self._clock = clock

    def notify_not_analysed(self, study_uid: str) -> None:
        """Send the study's notice, unless it was analysed meanwhile or this notice went out.

        Raises
        ------
        ReportBuildError
            The notice SR or ORU could not be built or failed validation.
        """
        with self._db.reading() as repos:
            status = repos.studies.status(study_uid)
            series = repos.images.series_of_study(study_uid)
            previous = repos.results.latest(study_uid)
        handle = status.identity.handle
        if status.state not in NOTICE_STATES:
            log.info("notice skipped study=%s reason=study is %s now", handle, status.state.value)
            return
        reason = status.reason or "unknown"
        input_key = "notice:" + hashlib.sha256(f"{status.state.value}\0{reason}".encode()).hexdigest()[:32]
        with self._db.reading() as repos:
            if repos.results.made_from(input_key) is not None:
                log.info("notice already sent study=%s", handle)
                return
        headers = [pydicom.dcmread(s.sample_path, stop_before_pixels=True) for s in series]
        notice = NotAnalysedNotice(status.identity, status.state, reason,
                                   tuple(self._series_received(s, h, status.state) for s, h in zip(series, headers)),
                                   __version__)
        bundle = self._build(notice, headers, previous.sr_path if previous is not None else None, input_key)
        now = self._clock()
        with self._db.transaction() as repos:
            result_id, alerted = record_and_queue(repos, bundle, self._settings, now)
        log.info("notice queued study=%s state=%s result=%d alert=%s", handle, status.state.value, result_id,
                 alerted)
        self._audit.record("notice-created", study_uid=study_uid, state=status.state.value,
                           sr_sop_instance_uid=bundle.objects[0].sop_instance_uid,
                           destinations=[d.name for d in self._settings.destinations])
        if self._outbox_wakeup is not None:
            self._outbox_wakeup.notify()

    def _series_received(self, series: SeriesOfStudy, header: pydicom.Dataset, state: StudyState) -> SeriesReceived:
        candidate = SeriesCandidate(series.series_uid, series.instance_count, header)
        outcome = (rejection_reason(candidate, self._settings.selection, receiving=not series.complete)
                   or ("still arriving" if not series.complete else
                       "could be analysed; the analysis failed" if state is StudyState.FAILED else "usable"))
        return SeriesReceived(str(header.get("SeriesNumber", "") or ""), str(header.get("SeriesDescription", "") or ""),
                              series.instance_count, outcome)

    def _build(self, notice: NotAnalysedNotice, headers: Sequence[pydicom.Dataset], predecessor_path: Path | None,
               input_key: str) -> ReportBundle:
        settings = self._settings
        predecessor = pydicom.dcmread(predecessor_path) if predecessor_path is not None else None
        sr = build_not_analysed_sr(notice, headers, settings.report, predecessor)
        if settings.report.validate_with_dicom3tools:
            validate_report_objects([sr], timeout_s=settings.report.validation_timeout_s,
                                    sr_validator=self._sr_validator)
        now = self._clock()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now)) + f"{now % 1:.3f}"[1:]
        folder = ensure_private_dir(settings.results_dir / notice.identity.handle / f"{stamp}-not-analysed")
        write_dataset(sr, folder / "sr.dcm")
        oru_path = control_id = None
        if settings.hl7.enabled and settings.hl7.outbound_host is not None:
            message = build_not_analysed_oru(notice, settings.hl7)
            oru_path = folder / ORU_FILE_NAME
            write_atomically(oru_path, message)
            control_id = oru_control_id(message)

        def raised(key: str) -> bool:
            with self._db.reading() as repos:
                return repos.alerts.raised(notice.identity.study_uid, key)

        alert = prepare_notice_alert(notice, settings.alerts, settings.results_dir, raised)
        summary = {"study_handle": notice.identity.handle, "not_analysed": notice.headline,
                   "state": notice.state.value, "reason": notice.reason, "software_version": notice.software_version,
                   "series": [s.outcome for s in notice.series]}
        write_atomically(folder / "summary.json", json.dumps(summary, indent=2).encode())
        return ReportBundle(study_uid=notice.identity.study_uid, input_key=input_key, completion="COMPLETE",
                            risk_category="unavailable", folder=folder,
                            objects=(ReportObject("sr.dcm", "SR", str(sr.SOPInstanceUID), folder / "sr.dcm"),),
                            oru_path=oru_path, oru_control_id=control_id, alert=alert, summary=summary)
