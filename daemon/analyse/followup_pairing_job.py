"""Job kind pair_followups: place a patient's reported head CTs in time order and decide
each one's role (baseline, follow-up, ...; ``domain.followup.assign_roles``).

Input: any study of the patient (queued by dispatch for every report that went out, and
by the clinical update after an HL7 message: a merge joins two timelines, a reported
evacuation changes a label). Output, in ONE transaction: every study's role
(``followup_pairings``), a ``report_followup`` job for each follow-up (it finds out
itself whether its report is already made), and the removal of any observed outcome
whose pair the new roles no longer hold (a baseline that arrived late, a merge).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from daemon.config import FollowupSettings
from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database
from daemon.state.patient_studies import studies_of_same_patient
from daemon.state.repositories import Repositories
from domain.dicom_time import parse_dicom_datetime
from domain.followup import FOLLOWUP_ROLES, HeadCtScan, Role, assign_roles
from domain.handles import study_handle
from domain.jobs import JobKind

log = logging.getLogger(__name__)


def patient_scans(repos: Repositories, study_uid: str) -> list[HeadCtScan]:
    """The reported head CTs of the patient of ``study_uid`` (itself included)."""
    status = repos.studies.find(study_uid)
    if status is None:
        return []
    scans = []
    for identity in studies_of_same_patient(repos, status.identity):
        record = repos.analyses.latest_reported(identity.study_uid)
        if record is None:
            continue  # not (yet) reported: it joins the timeline when its report goes out
        acquired = record.analysis.acquired_at or parse_dicom_datetime(identity.study_datetime)
        scans.append(HeadCtScan(identity.study_uid, identity.handle, acquired,
                                record.analysis.measurements.volume_ml))
    return scans


class FollowupPairingStage:
    """Runs ``pair_followups`` jobs."""

    def __init__(self, settings: FollowupSettings, db: Database, wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._db = db
        self._wakeup = wakeup
        self._clock = clock

    def pair_followups(self, study_uid: str) -> None:
        """Decide the roles of the patient's reported CTs; queue their follow-up reports."""
        rules = self._settings.rules()
        now = self._clock()
        followups = 0
        with self._db.transaction() as repos:
            scans = patient_scans(repos, study_uid)
            acquired: dict[str, datetime | None] = {s.study_uid: s.acquired_at for s in scans}
            pairings = assign_roles(scans, rules)
            for pairing in pairings:
                if repos.followups.record_pairing(pairing, acquired[pairing.study_uid], now):
                    log.info("follow-up pairing study=%s role=%s baseline=%s hours=%s", study_handle(pairing.study_uid),
                             pairing.role.value, study_handle(pairing.baseline_study_uid)
                             if pairing.baseline_study_uid else "-",
                             "-" if pairing.hours_after_baseline is None else f"{pairing.hours_after_baseline:.1f}")
                if pairing.role in FOLLOWUP_ROLES:
                    repos.jobs.enqueue(JobKind.REPORT_FOLLOWUP, pairing.study_uid, now, now)
                    followups += 1
            kept = {(p.baseline_study_uid, p.study_uid) for p in pairings
                    if p.role is Role.FOLLOWUP and p.baseline_study_uid is not None}
            dropped = repos.followups.drop_outcomes_except(list(acquired), kept)
        if dropped:
            log.warning("observed outcomes withdrawn study=%s count=%d reason=roles changed",
                        study_handle(study_uid), dropped)
        if followups and self._wakeup is not None:
            self._wakeup.notify()
