"""Decides when each series is complete, and what its study needs then.

The timers are durable: every stored instance sets its series' ``recheck_at`` (the end
of the confirm or quiet period) in the same transaction as the instance, and
``check_due`` (run by the scheduler every ``check_interval_s``) takes the decision again
for every series whose time has come. A restart, or another node, therefore finds every
open series' timer in the database.

When a series completes, the study-level decision (``decide_study``) is taken in the
same transaction, under the study's row lock: analyse its best complete series now
(unless a thinner one is still arriving), or, when nothing can be analysed and nothing
is arriving, queue the analysis job to run when the study has settled, which then sends
the "not analysed" notice. So no crash leaves a complete study that nothing will
analyse or answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping

import pydicom

from daemon.analyse.series_selection import SeriesCandidate, StudyDecision, decide_study
from daemon.assemble.series_completion import decide_completion
from daemon.config import SeriesCompletionSettings, SeriesSelectionSettings
from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database
from daemon.state.repositories import Repositories
from domain.handles import study_handle
from domain.jobs import JobKind
from domain.study import SeriesProgress, StudyEvent

log = logging.getLogger(__name__)


class SeriesTracker:
    """Completion decisions for open series; wakes the job runner when a study is queued."""

    def __init__(self, db: Database, settings: SeriesCompletionSettings, wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time,
                 selection: SeriesSelectionSettings | None = None) -> None:
        self._db = db
        self._settings = settings
        self._selection = selection or SeriesSelectionSettings()
        self._wakeup = wakeup
        self._clock = clock
        self._lock = threading.Lock()

    def recheck_at(self, received_at: float) -> float:
        """When a series whose last image came at ``received_at`` is to be looked at again
        (the end of the confirm period, when slice positions may complete it)."""
        settings = self._settings
        return received_at + (settings.confirm_s if settings.use_slice_positions else settings.quiet_period_s)

    def instance_stored(self, progress: SeriesProgress) -> None:
        """After each new instance's commit: complete the series now if its count is in."""
        decision = decide_completion(progress, progress.last_received_at, self._settings)
        if decision.complete:
            self.check_series(progress.series_uid)

    def association_released(self, delivered: Mapping[str, int], still_arriving: Collection[str]) -> None:
        """An association ended with A-RELEASE after storing ``delivered`` (series UID ->
        images it brought): decide now for each series it brought at least
        ``min_stack_slices`` images of that no other open association of this node is
        still bringing (``complete_on_release``; one or a few images per association
        says nothing about the series)."""
        if not (self._settings.complete_on_release and self._settings.use_slice_positions):
            return
        for series_uid, images in delivered.items():
            if images >= self._settings.min_stack_slices and series_uid not in still_arriving:
                self.check_series(series_uid, released=True)

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

    def check_series(self, series_uid: str, released: bool = False) -> None:
        """Take the completion decision now; complete the series or set its next check.

        ``released``: the association that brought the series has just been released.
        """
        with self._lock, self._db.transaction() as repos:
            progress = repos.images.progress(series_uid)
            if progress is None:
                return
            # Two nodes completing two series of one study at once must not each see the
            # other's still open: the study's row serialises them.
            repos.studies.lock(progress.study_uid)
            progress = repos.images.progress(series_uid)
            if progress is None:
                return
            now = self._clock()
            positions = (repos.images.slice_positions(series_uid)
                         if self._settings.use_slice_positions and progress.expected_images is None
                         and (released or now >= progress.last_received_at + self._settings.confirm_s) else None)
            decision = decide_completion(progress, now, self._settings, positions, released)
            if not decision.complete:
                assert decision.recheck_at is not None
                repos.images.recheck_later(series_uid, decision.recheck_at)
                return
            repos.images.complete_series(series_uid, decision.reason, now)
            study = self._decide_study(repos, progress.study_uid, now)
        handle = study_handle(progress.study_uid)
        log.info("series complete study=%s series=%s reason=%s", handle, study_handle(series_uid), decision.reason)
        log.info("study decision study=%s action=%s reason=%s", handle, study.action, study.reason)
        if study.action != "wait" and self._wakeup is not None:
            self._wakeup.notify()

    def _decide_study(self, repos: Repositories, study_uid: str, now: float) -> StudyDecision:
        """The study-level decision, and its analysis job when it is due (same transaction)."""
        complete: list[SeriesCandidate] = []
        receiving: list[SeriesCandidate] = []
        for series in repos.images.series_of_study(study_uid):
            candidate = SeriesCandidate(series.series_uid, series.instance_count,
                                        pydicom.dcmread(series.sample_path, stop_before_pixels=True))
            (complete if series.complete else receiving).append(candidate)
        decision = decide_study(complete, receiving, self._selection)
        if decision.action == "analyse":
            repos.jobs.enqueue(JobKind.ANALYSE_STUDY, study_uid, now, now)
            repos.studies.record_event(study_uid, StudyEvent.ANALYSIS_QUEUED, now)
        elif decision.action == "nothing_usable":
            # The analysis job takes the same decision when the study has settled, and
            # sends the notice then (or analyses a usable series that came meanwhile).
            repos.jobs.enqueue(JobKind.ANALYSE_STUDY, study_uid, now + self._settings.study_settle_s, now)
        return decision
