"""Stage 5: turn an analysed study into SEG + SR files, a result row, queued deliveries
and (when a rule fires) a queued alert — all durable before the job is marked done.

Files are written first (atomically); then one transaction records the result, its
deliveries, the outbound ORU and the alert. A crash before that commit leaves only
orphan files, and the job runs again; a crash after it leaves everything queued, and
the job, run again, finds its result by ``input_key`` and does not make a second one
(a second SR with a new UID would reach PACS as a second report).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from sqlite3 import Connection

import pydicom
from pydicom.dataset import Dataset

from daemon.alert.dispatch import queue_alert
from daemon.analysis.analyse_study import AnalysedStudy, StageTimer, results_folder, summary_of
from daemon.audit_log import audit
from daemon.config import Settings
from daemon.deliver.outbox import Outbox
from daemon.report.key_image_builder import build_key_images
from daemon.report.seg_builder import build_segmentation
from daemon.report.sr_builder import build_measurement_report
from daemon.report.validation import validate_report_objects, write_dataset
from daemon.state.database import Database
from domain.analysis import StudyAnalysis
from domain.durable_files import write_atomically
from inference.nifti_io import gzipped, mask_to_nifti

log = logging.getLogger(__name__)

# Writes the outbound HL7 ORU for a result into its folder and queues it in the given
# transaction (daemon/clinical).
Hl7ResultWriter = Callable[[StudyAnalysis, Path, Connection], None]


@dataclass(frozen=True)
class PublishedResult:
    result_id: int
    folder: Path
    sr_sop_uid: str
    seg_sop_uid: str | None


class ResultPublisher:
    def __init__(self, settings: Settings, db: Database, outbox: Outbox,
                 hl7_result_writer: Hl7ResultWriter | None = None,
                 on_published: Callable[[], None] | None = None) -> None:
        self._settings = settings
        self._db = db
        self._outbox = outbox
        self._hl7_result_writer = hl7_result_writer
        # Called after the commit, so deliveries start now rather than at the next poll.
        self._on_published = on_published

    def publish(self, analysed: AnalysedStudy, input_key: str, predecessor_sr: Dataset | None = None,
                reuse_segmentation: Dataset | None = None) -> PublishedResult:
        """Build, validate and store the report objects; queue deliveries and alert.

        ``input_key`` names what the result was made from (study_jobs.input_key); it is
        stored with the result so a re-run of the same job finds it.
        """
        analysis = analysed.analysis
        settings = self._settings
        timer = StageTimer()
        with timer.stage("report"):
            if reuse_segmentation is not None:
                segmentation = reuse_segmentation
            else:
                segmentation = build_segmentation(analysed.source_images, analysed.volume, analysed.mask,
                                                  settings.report, analysis.software_version)
            sr = build_measurement_report(analysis, analysed.source_images, segmentation, settings.report,
                                          predecessor_sr=predecessor_sr)
            key_images = None
            if reuse_segmentation is None and settings.report.send_key_images:
                key_images = build_key_images(analysis, analysed.source_images, analysed.volume,
                                              analysed.mask, settings.report)
        # Sent in this order: what the SR references reaches PACS before the SR.
        objects: list[tuple[str, Dataset]] = [("sr.dcm", sr)]
        if reuse_segmentation is None:
            objects.insert(0, ("seg.dcm", segmentation))
        if key_images is not None:
            objects.insert(-1, ("key-images.dcm", key_images))
        if settings.report.validate_with_dicom3tools:
            with timer.stage("validate"):
                validate_report_objects([ds for _, ds in objects])

        folder = results_folder(settings.results_dir, analysis.identity.handle, analysis.completion)
        for name, ds in objects:
            write_dataset(ds, folder / name)
        sr_path, seg_path = folder / "sr.dcm", folder / "seg.dcm"
        if reuse_segmentation is None:
            write_atomically(folder / "mask.nii.gz", gzipped(mask_to_nifti(analysed.volume, analysed.mask)))
        summary = summary_of(analysed)
        summary["stage_seconds"].update(timer.seconds)
        write_atomically(folder / "summary.json", json.dumps(summary, indent=2, default=str).encode())

        study_uid = analysis.identity.study_uid
        with self._db.transaction() as conn:
            result_id = conn.execute(
                "INSERT INTO results(study_uid, status, sr_sop_uid, seg_sop_uid, sr_path, seg_path,"
                " risk_category, summary_json, input_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (study_uid, analysis.completion, str(sr.SOPInstanceUID),
                 str(segmentation.SOPInstanceUID), str(sr_path), str(seg_path),
                 analysis.risk_category, json.dumps(summary, default=str), input_key, time.time()),
            ).lastrowid
            conn.execute("UPDATE studies SET state = 'analysed', updated_at = ? WHERE study_uid = ?",
                         (time.time(), study_uid))
            for destination in settings.destinations:
                for name, ds in objects:
                    self._outbox.enqueue("dicom", destination.name, str(ds.SOPInstanceUID), folder / name,
                                         study_uid, conn=conn)
            if self._hl7_result_writer is not None:
                self._hl7_result_writer(analysis, folder, conn)
            queue_alert(self._db, self._outbox, analysis, settings.alerts, settings.results_dir, conn=conn)
        assert result_id is not None
        if self._on_published is not None:
            self._on_published()
        audit("result-created", study_uid=analysis.identity.study_uid, completion=analysis.completion,
              sr_sop_instance_uid=str(sr.SOPInstanceUID),
              destinations=[d.name for d in settings.destinations])
        log.info("result stored study=%s completion=%s result=%d", analysis.identity.handle,
                 analysis.completion, result_id)
        return PublishedResult(result_id, folder, str(sr.SOPInstanceUID), str(segmentation.SOPInstanceUID))


def result_made_from(db: Database, input_key: str) -> tuple[int, str] | None:
    """(result id, status) of the result already made from ``input_key``, or None."""
    rows = db.query("SELECT id, status FROM results WHERE input_key = ? ORDER BY id LIMIT 1", (input_key,))
    return (int(rows[0]["id"]), str(rows[0]["status"])) if rows else None


def latest_result(db: Database, study_uid: str) -> tuple[Dataset, Dataset | None, str] | None:
    """The newest result's SR and SEG datasets and its status, or None."""
    rows = db.query("SELECT sr_path, seg_path, status FROM results WHERE study_uid = ? ORDER BY id DESC"
                    " LIMIT 1", (study_uid,))
    if not rows:
        return None
    seg_path = rows[0]["seg_path"]
    seg = pydicom.dcmread(seg_path) if seg_path and Path(seg_path).exists() else None
    return pydicom.dcmread(rows[0]["sr_path"]), seg, rows[0]["status"]

