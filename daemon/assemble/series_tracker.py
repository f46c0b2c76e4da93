"""Decides when each series is complete and hands complete studies to analysis.

The timers are durable: every stored instance sets its series' ``recheck_at`` (the end
of the quiet period) in the same transaction as the instance, and ``check_due`` (run by
the scheduler every ``poll_interval_s``) takes the decision again for every series whose
time has come. A restart, or another node, therefore finds every open series' timer in
the database. The series that completes a study is marked complete in the same
transaction that queues the study's analysis job, so no crash leaves a complete study
that nothing will analyse.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from daemon.assemble.series_completion import decide_completion
from daemon.config import SeriesCompletionSettings
from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database
from domain.handles import study_handle
from domain.jobs import JobKind
from domain.study import SeriesProgress, StudyEvent

log = logging.getLogger(__name__)


class SeriesTracker:
    """Completion decisions for open series; wakes the job runner when a study is queued."""

    def __init__(self, db: Database, settings: SeriesCompletionSettings, wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._settings = settings
        self._wakeup = wakeup
        self._clock = clock
        self._lock = threading.Lock()

    def recheck_at(self, received_at: float) -> float:
        """When a series whose last image came at ``received_at`` is to be looked at again."""
        return received_at + self._settings.quiet_period_s

    def instance_stored(self, progress: SeriesProgress) -> None:
        """After each new instance's commit: complete the series now if its count is in."""
        decision = decide_completion(progress, progress.last_received_at, self._settings)
        if decision.complete:
            self.check_series(progress.series_uid)

    def resume_open_series(self) -> int:
        """At start-up: decide for every open series now (its expected image count may have
        been reached when the node stopped). Returns how many were open."""
        with self._db.reading() as repos:
            open_series = repos.images.open_series()
        for series_uid in open_series:
            self.check_series(series_uid)
        return len(open_series)

    def check_due(self) -> int:
        """Decide again for every open series whose recheck time has come; how many."""
        with self._db.reading() as repos:
            due = repos.images.series_due(self._clock())
        for series_uid in due:
            self.check_series(series_uid)
        return len(due)

    def check_series(self, series_uid: str) -> None:
        """Take the completion decision now; complete the series or set its next check."""
        with self._lock, self._db.transaction() as repos:
            progress = repos.images.progress(series_uid)
            if progress is None:
                return
            # Two nodes completing the last two series of one study at once must not each
            # see the other's still open: the study's row serialises them.
            repos.studies.lock(progress.study_uid)
            progress = repos.images.progress(series_uid)
            if progress is None:
                return
            now = self._clock()
            decision = decide_completion(progress, now, self._settings)
            if not decision.complete:
                assert decision.recheck_at is not None
                repos.images.recheck_later(series_uid, decision.recheck_at)
                return
            still_open = repos.images.complete_series(series_uid, decision.reason, now)
            if not still_open:
                repos.jobs.enqueue(JobKind.ANALYSE_STUDY, progress.study_uid, now, now)
                repos.studies.record_event(progress.study_uid, StudyEvent.ALL_SERIES_COMPLETE, now)
        handle = study_handle(progress.study_uid)
        log.info("series complete study=%s reason=%s", handle, decision.reason)
        if still_open:
            log.info("study waiting study=%s open_series=%d", handle, still_open)
            return
        log.info("study queued for analysis study=%s", handle)
        if self._wakeup is not None:
            self._wakeup.notify()
