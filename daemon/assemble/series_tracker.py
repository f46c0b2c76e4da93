"""Tracks open series with APScheduler and hands complete studies to analysis.

Every stored instance (re)arms a one-shot scheduler job for its series at the end of
the quiet period; when it fires, the completion decision is taken again against the
database. When every series of a study is complete, an ``analyse_study`` job is queued
in the durable job table. On start-up, open series are re-armed from the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.base import BaseScheduler

from daemon.assemble.series_completion import SeriesProgress, decide_completion
from daemon.config import SeriesCompletionSettings
from daemon.receive.instance_store import InstanceHeader
from daemon.state.database import Database
from daemon.state.job_queue import JobQueue
from domain.handles import study_handle

log = logging.getLogger(__name__)

ANALYSE_STUDY = "analyse_study"


class SeriesTracker:
    def __init__(
        self,
        db: Database,
        jobs: JobQueue,
        scheduler: BaseScheduler,
        settings: SeriesCompletionSettings,
        on_study_queued: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._scheduler = scheduler
        self._settings = settings
        self._on_study_queued = on_study_queued
        self._clock = clock
        self._lock = threading.Lock()

    def instance_stored(self, header: InstanceHeader) -> None:
        """Called by the listener after each new instance is durably stored."""
        self.check_series(header.series_uid)

    def resume_open_series(self) -> int:
        """Re-arm every series still receiving (after a restart). Returns how many."""
        rows = self._db.query("SELECT series_uid FROM series WHERE state = 'receiving'")
        for row in rows:
            self.check_series(row["series_uid"])
        return len(rows)

    def check_series(self, series_uid: str) -> None:
        """Take the completion decision now; complete it or re-arm the timer."""
        with self._lock:
            rows = self._db.query(
                "SELECT study_uid, instance_count, expected_images, last_received_at, state"
                " FROM series WHERE series_uid = ?",
                (series_uid,),
            )
            if not rows or rows[0]["state"] != "receiving":
                return
            row = rows[0]
            decision = decide_completion(
                SeriesProgress(row["instance_count"], row["expected_images"], row["last_received_at"]),
                self._clock(),
                self._settings,
            )
            if not decision.complete:
                assert decision.recheck_at is not None
                self._scheduler.add_job(
                    self.check_series,
                    trigger="date",
                    run_date=datetime.fromtimestamp(decision.recheck_at, tz=timezone.utc),
                    args=[series_uid],
                    id=f"series-complete:{series_uid}",
                    replace_existing=True,
                    misfire_grace_time=None,
                )
                return
            self._complete(series_uid, row["study_uid"], decision.reason)

    def _complete(self, series_uid: str, study_uid: str, reason: str) -> None:
        # One transaction: a crash between marking the last series complete and queueing
        # the study's analysis would leave a study that no restart analyses
        # (resume_open_series only re-arms series still receiving).
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE series SET state = 'complete', completed_at = ?, completion_reason = ?"
                " WHERE series_uid = ?",
                (self._clock(), reason, series_uid),
            )
            still_open = conn.execute(
                "SELECT COUNT(*) FROM series WHERE study_uid = ? AND state = 'receiving'", (study_uid,)
            ).fetchone()[0]
            if not still_open:
                self._jobs.enqueue(ANALYSE_STUDY, study_uid, conn=conn)
                conn.execute("UPDATE studies SET state = 'queued', updated_at = ? WHERE study_uid = ?",
                             (self._clock(), study_uid))
        handle = study_handle(study_uid)
        log.info("series complete study=%s reason=%s", handle, reason)
        if still_open:
            log.info("study waiting study=%s open_series=%d", handle, still_open)
            return
        log.info("study queued for analysis study=%s", handle)
        if self._on_study_queued is not None:
            self._on_study_queued()
