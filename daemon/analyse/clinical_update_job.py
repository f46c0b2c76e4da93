"""Job kind clinical_update: a patient's clinical data changed; finalise their studies now.

Input: a patient key (queued by the HL7 intake in the transaction that applied the
message). Output: a ``pair_followups`` job for the patient (merges and procedures change
pairing and labels) and ``finalise_study`` jobs, due now, for each study of that patient whose
predictor variables are now all known and that waits for them: its preliminary report
went out, or it is still being analysed (its clinical lookup may have run before the
data arrived, and its preliminary report would otherwise wait the whole
``wait_for_clinical_s``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from daemon.analyse.clinical_match import match_clinical
from daemon.config import Hl7Settings
from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database
from domain.clinical import PREDICTOR_VARIABLES
from domain.dicom_time import parse_dicom_datetime
from domain.jobs import JobKind, JobState

log = logging.getLogger(__name__)

_ANALYSING = (JobKind.ANALYSE_STUDY, JobKind.REPLAY_STUDY, JobKind.REPORT_STUDY, JobKind.DISPATCH_REPORT)


class ClinicalUpdateStage:
    """Runs ``clinical_update`` jobs."""

    def __init__(self, settings: Hl7Settings, db: Database, wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time, pair_followups: bool = False) -> None:
        self._settings = settings
        self._pair_followups = pair_followups
        self._db = db
        self._wakeup = wakeup
        self._clock = clock

    def clinical_update(self, patient_key: str) -> None:
        """Queue the final report of each waiting study of the patient whose variables are in,
        and (with ``pair_followups``) the patient's follow-up pairing again: a merge or a
        reported evacuation can change it."""
        queued = 0
        with self._db.transaction() as repos:
            identifiers = repos.clinical.identifiers_of(int(patient_key))
            studies = repos.studies.matching_identifiers(identifiers)
            reported = [s.study_uid for s in studies if repos.results.latest(s.study_uid) is not None]
            if self._pair_followups and reported:
                now = self._clock()
                repos.jobs.enqueue(JobKind.PAIR_FOLLOWUPS, reported[0], now, now)
                queued += 1
            for identity in studies:
                matched = match_clinical(repos, identity, parse_dicom_datetime(identity.study_datetime),
                                         self._settings)
                if matched.variables.missing(PREDICTOR_VARIABLES):
                    continue
                analysing = any(repos.jobs.state_of(kind, identity.study_uid) in (JobState.PENDING, JobState.RUNNING)
                                for kind in _ANALYSING)
                latest = repos.results.latest(identity.study_uid)
                if analysing or (latest is not None and latest.status == "PARTIAL"):
                    log.info("clinical variables complete study=%s: finalising now (%s)", identity.handle,
                             ",".join(PREDICTOR_VARIABLES))
                    now = self._clock()
                    repos.jobs.enqueue(JobKind.FINALISE_STUDY, identity.study_uid, now, now)
                    queued += 1
        if queued and self._wakeup is not None:
            self._wakeup.notify()
