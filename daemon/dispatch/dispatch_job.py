"""Job kind dispatch_report: record a built report and queue everything it sends.

Input: the study's newest built report that no result records (``ReportBundle``).
Output, in ONE transaction: the ``results`` row, one outbox item per report object and
DICOM destination, the ORU for the EHR, the alert (recorded once per study and alert
key, one outbox item per webhook and one for e-mail), the study's new state, for a
preliminary report the ``finalise_study`` job due when the wait for clinical data ends,
and the ``pair_followups`` job that places the study in its patient's timeline.
A crash before the commit leaves nothing recorded and the job runs again; after it,
everything is queued and a run again finds the result by its input key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon.audit_log import AuditLog
from daemon.config import Settings
from daemon.dispatch.alert_queue import alert_routing, queue_alert
from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database
from daemon.state.repositories import Repositories
from domain.delivery import HL7_DESTINATION, Channel, DeliveryRequest
from domain.handles import study_handle
from domain.jobs import JobKind
from domain.report import AlertFiles, ReportBundle, ReportObject
from domain.study import StudyEvent

log = logging.getLogger(__name__)


class DispatchStage:
    """Runs ``dispatch_report`` jobs; ``outbox_wakeup`` starts deliveries at once."""

    def __init__(self, settings: Settings, db: Database, audit: AuditLog,
                 outbox_wakeup: Wakeup | None = None, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._db = db
        self._audit = audit
        self._outbox_wakeup = outbox_wakeup
        self._clock = clock

    def dispatch_report(self, study_uid: str) -> None:
        """Record the study's newest undispatched report and queue what it sends."""
        now = self._clock()
        with self._db.transaction() as repos:
            bundle = repos.analyses.latest_undispatched(study_uid)
            if bundle is None:
                log.info("dispatch skipped study=%s reason=nothing undispatched", study_handle(study_uid))
                return
            result_id, alerted = record_and_queue(repos, bundle, self._settings, now)
            final = bundle.completion == "COMPLETE"
            repos.studies.record_event(
                study_uid, StudyEvent.FINAL_DISPATCHED if final else StudyEvent.PRELIMINARY_DISPATCHED, now)
            if not final:
                repos.jobs.enqueue(JobKind.FINALISE_STUDY, study_uid,
                                   now + self._settings.hl7.wait_for_clinical_s, now)
            if self._settings.followup.enabled:  # is it a baseline, a follow-up, ...?
                repos.jobs.enqueue(JobKind.PAIR_FOLLOWUPS, study_uid, now, now)
        handle = study_handle(study_uid)
        log.info("result stored study=%s completion=%s result=%d alert=%s", handle, bundle.completion,
                 result_id, alerted)
        sr = bundle.object_of("SR")
        self._audit.record("result-created", study_uid=study_uid, completion=bundle.completion,
              sr_sop_instance_uid=sr.sop_instance_uid if sr else None,
              destinations=[d.name for d in self._settings.destinations])
        if self._outbox_wakeup is not None:
            self._outbox_wakeup.notify()



def record_and_queue(repos: Repositories, bundle: ReportBundle, settings: Settings, now: float) -> tuple[int, bool]:
    """In the caller's transaction: the ``results`` row and everything the report sends
    (``queue_sends``). Returns (result id, alerted).

    Also used for a "not analysed" notice (daemon/analyse/notice_job.py).
    """
    result_id = repos.results.add(bundle, now)
    alerted = queue_sends(repos, settings, bundle.study_uid, bundle.objects, bundle.oru_path, bundle.oru_control_id,
                          bundle.alert, now)
    return result_id, alerted


def queue_sends(repos: Repositories, settings: Settings, study_uid: str, objects: Sequence[ReportObject],
                oru_path: Path | None, oru_control_id: str | None, alert: AlertFiles | None, now: float) -> bool:
    """In the caller's transaction: one outbox item per object and PACS, the ORU for the
    EHR, and the alert (once per study and key). Returns whether the alert was queued.

    Shared by every report the node sends (report, notice, follow-up report).
    """
    for destination in settings.destinations:
        for obj in objects:
            repos.outbox.enqueue(DeliveryRequest(Channel.DICOM, destination.name, obj.sop_instance_uid, obj.path,
                                                 study_uid), now)
    if oru_path is not None and oru_control_id is not None:
        repos.outbox.enqueue(DeliveryRequest(Channel.HL7, HL7_DESTINATION, oru_control_id, oru_path, study_uid), now)
    return alert is not None and queue_alert(repos, study_uid, alert, settings.alerts.webhooks, now,
                                             **alert_routing(settings, repos.studies.last_image_at(study_uid), now))
