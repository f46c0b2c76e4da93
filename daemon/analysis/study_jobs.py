"""The two job kinds of a study: the first analysis, and the final report after the
clinical variables arrived (or the wait for them ran out).

Each job is idempotent: its ``input_key`` (job kind + digest of the study's images) is
stored with its result, and a job that finds its result already made (it crashed after
publishing, before it was marked done) only re-arms what follows it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path

from daemon.analysis.analyse_study import MaskLoader, StudyAnalyser
from daemon.analysis.job_runner import JobHandler
from daemon.analysis.publish_result import ResultPublisher, latest_result, result_made_from
from daemon.assemble.series_tracker import ANALYSE_STUDY
from daemon.config import Settings
from daemon.state.database import Database
from daemon.state.job_queue import JobQueue
from domain.clinical import PREDICTOR_VARIABLES
from domain.handles import study_handle
from inference.nifti_io import load_nifti_mask

log = logging.getLogger(__name__)

FINALISE_STUDY = "finalise_study"


class StudyJobs:
    def __init__(self, settings: Settings, db: Database, jobs: JobQueue,
                 analyser: StudyAnalyser, publisher: ResultPublisher) -> None:
        self._settings = settings
        self._db = db
        self._jobs = jobs
        self._analyser = analyser
        self._publisher = publisher

    def handlers(self) -> dict[str, JobHandler]:
        return {ANALYSE_STUDY: self.analyse_study, FINALISE_STUDY: self.finalise_study}

    def analyse_study(self, study_uid: str) -> None:
        """First report: PARTIAL (preliminary) when clinical variables are still missing."""
        key = input_key(self._db, ANALYSE_STUDY, study_uid)
        made = result_made_from(self._db, key)
        if made is not None:
            log.info("analysis already published study=%s result=%d", study_handle(study_uid), made[0])
            completion = made[1]
        else:
            # New images after a report (a late series): the new report supersedes it.
            previous = latest_result(self._db, study_uid)
            analysed = self._analyser.analyse(study_uid)
            self._publisher.publish(analysed, key, predecessor_sr=previous[0] if previous else None)
            completion = analysed.analysis.completion
        if completion == "PARTIAL":
            self._jobs.enqueue(FINALISE_STUDY, study_uid, delay_s=self._settings.hl7.wait_for_clinical_s)

    def finalise_study(self, study_uid: str) -> None:
        """Final report (COMPLETE) that references the preliminary one and reuses its SEG."""
        previous = latest_result(self._db, study_uid)
        if previous is None or previous[2] == "COMPLETE":
            log.info("finalise skipped study=%s reason=%s", study_handle(study_uid),
                     "no preliminary result" if previous is None else "already final")
            return
        preliminary_sr, preliminary_seg, _ = previous
        analysed = self._analyser.analyse(study_uid, completion_requested="COMPLETE",
                                          reuse_mask=preliminary_mask(self._db, study_uid))
        self._publisher.publish(analysed, input_key(self._db, FINALISE_STUDY, study_uid),
                                predecessor_sr=preliminary_sr, reuse_segmentation=preliminary_seg)

    def clinical_data_arrived(self, study_uids: list[str], variables_complete: dict[str, bool]) -> None:
        """New clinical data for these studies: finalise now those that waited and are complete.

        A study still being analysed counts as waiting: its lookup may have run before
        these data arrived, and its preliminary result, stored after this call, would
        otherwise wait the whole ``wait_for_clinical_s``. The job state is read before the
        results, since the analysis stores its result before its job is marked done.
        """
        for study_uid in study_uids:
            if not variables_complete.get(study_uid):
                continue
            analysing = self._jobs.state_of(ANALYSE_STUDY, study_uid) in ("pending", "running")
            previous = self._db.query(
                "SELECT status FROM results WHERE study_uid = ? ORDER BY id DESC LIMIT 1", (study_uid,))
            if analysing or (previous and previous[0]["status"] == "PARTIAL"):
                log.info("clinical variables complete study=%s: finalising now (%s)",
                         study_handle(study_uid), ",".join(PREDICTOR_VARIABLES))
                self._jobs.enqueue(FINALISE_STUDY, study_uid, delay_s=0)


def input_key(db: Database, job_kind: str, study_uid: str) -> str:
    """The job kind and a digest of every image of the study (new images, new key)."""
    digest = hashlib.sha256(study_uid.encode())
    for row in db.query("SELECT sop_instance_uid FROM instances WHERE study_uid = ? ORDER BY sop_instance_uid",
                        (study_uid,)):
        digest.update(b"\0" + row["sop_instance_uid"].encode())
    return f"{job_kind}:{digest.hexdigest()[:32]}"


def preliminary_mask(db: Database, study_uid: str) -> MaskLoader | None:
    """Loader of the mask the latest result stored beside its SEG, or None if it is gone."""
    rows = db.query("SELECT seg_path, summary_json FROM results WHERE study_uid = ? ORDER BY id DESC LIMIT 1",
                    (study_uid,))
    if not rows or not rows[0]["seg_path"]:
        return None
    path = Path(rows[0]["seg_path"]).parent / "mask.nii.gz"
    if not path.is_file():
        log.warning("preliminary mask missing study=%s: masking again", study_handle(study_uid))
        return None
    measured = json.loads(rows[0]["summary_json"])["measurements"]
    return partial(load_nifti_mask, path, method_name=measured["method_name"],
                   method_version=measured["method_version"])
