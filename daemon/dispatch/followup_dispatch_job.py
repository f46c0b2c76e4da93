"""Job kind dispatch_followup: record a built follow-up report and queue what it sends.

Input: the follow-up study's newest follow-up report not yet dispatched (``FollowupBundle``).
Output, in ONE transaction: one outbox item per DICOM destination for the follow-up SR,
the ORU for the EHR, the expansion alert (once per follow-up study; joined to the
patient's alert group), for a first follow-up the baseline's observed outcome (what
``hemex performance`` reads), and the report marked dispatched. A crash before the
commit leaves nothing recorded and the job runs again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from daemon.audit_log import AuditLog
from daemon.config import Settings
from daemon.dispatch.dispatch_job import queue_sends
from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database
from domain.followup import Role
from domain.handles import study_handle

log = logging.getLogger(__name__)


class FollowupDispatchStage:
    """Runs ``dispatch_followup`` jobs; ``outbox_wakeup`` starts deliveries at once."""

    def __init__(self, settings: Settings, db: Database, audit: AuditLog,
                 outbox_wakeup: Wakeup | None = None, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._db = db
        self._audit = audit
        self._outbox_wakeup = outbox_wakeup
        self._clock = clock

    def dispatch_followup(self, study_uid: str) -> None:
        """Record the study's newest undispatched follow-up report and queue what it sends."""
        now = self._clock()
        with self._db.transaction() as repos:
            bundle = repos.followups.latest_undispatched_report(study_uid)
            if bundle is None:
                log.info("follow-up dispatch skipped study=%s reason=nothing undispatched", study_handle(study_uid))
                return
            alerted = queue_sends(repos, self._settings, study_uid, bundle.objects, bundle.oru_path,
                                  bundle.oru_control_id, bundle.alert, now)
            outcome = bundle.outcome
            if outcome.role is Role.FOLLOWUP:
                repos.followups.record_outcome(outcome, now)
            repos.followups.mark_dispatched(bundle.input_key, now)
        log.info("follow-up result stored study=%s baseline=%s status=%s expansion=%s alert=%s",
                 study_handle(study_uid), outcome.baseline_handle, outcome.change.status, outcome.change.expansion,
                 alerted)
        self._audit.record("followup-result-created", study_uid=study_uid,
                           baseline_study_uid=outcome.baseline_study_uid,
                           sr_sop_instance_uid=bundle.objects[0].sop_instance_uid if bundle.objects else None,
                           destinations=[d.name for d in self._settings.destinations])
        if self._outbox_wakeup is not None:
            self._outbox_wakeup.notify()
