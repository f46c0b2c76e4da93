"""One worker thread that runs durable jobs one at a time (the GPU serves one study at a
time; models stay loaded in this process).

Every outcome is recorded: success marks the job done (or pending again if it was queued
while it ran); a handler may ask to run again after a delay; a ``HemexError`` (a known,
explained failure: no analysable series, unusable geometry, a report that fails
validation) fails it for good; anything else is a bug, logged with its traceback and
retried a few times. A study job failed for good moves its study to ``no_series`` or
``failed`` with the reason and queues its "not analysed" notice (SR to PACS, ORU,
alert), in the same transaction, so that no doctor waits for a report that will not
come; the failed study is visible in ``hemex status``, the metrics and the log, and
``hemex replay`` can run it again. A study that already has a report keeps it (a
corrected analysis that failed sends no notice over a valid report).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database
from domain.errors import HemexError, NoAnalysableSeriesError
from domain.handles import study_handle
from domain.jobs import STUDY_JOBS, Job, JobKind
from domain.redaction import mask_quoted
from domain.study import StudyEvent

log = logging.getLogger(__name__)

# Runs the job whose key it is given; may return seconds after which to run it again.
JobHandler = Callable[[str], "float | None"]

# Unexpected errors (a bug, a transient resource problem) are retried a few times with
# a growing delay, then the job is left failed for an operator to look at.
MAX_ATTEMPTS = 3
RETRY_DELAY_S = 30.0
_REASON_CHARS = 500


class JobRunner:
    """Claims due jobs and runs their kind's handler, one at a time.

    Parameters
    ----------
    owner
        This node's name: the jobs it claims carry it with a lease of ``lease_s``,
        renewed while a job runs, so another node on the same database takes a job over
        only when this node stopped renewing it (it died).
    """

    def __init__(self, db: Database, handlers: Mapping[JobKind, JobHandler], wakeup: Wakeup | None = None,
                 owner: str = "node", lease_s: float = 60.0, idle_poll_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._handlers = dict(handlers)
        self._wakeup = wakeup or Wakeup()
        self._owner = owner
        self._lease_s = lease_s
        self._idle_poll_s = idle_poll_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hemex-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Finish the job in hand, then stop (the rest is resumed at the next start)."""
        self._stop.set()
        self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def resume_interrupted(self) -> int:
        """After a crash: jobs this node left running run again. Returns how many."""
        with self._db.transaction() as repos:
            return repos.jobs.resume_interrupted(self._owner, self._clock())

    def run_pending(self) -> int:
        """Run every due job now (used by the loop and by tests). Returns how many ran."""
        count = 0
        while not self._stop.is_set():
            with self._db.transaction() as repos:
                job = repos.jobs.claim_next(self._clock(), self._owner, self._lease_s, tuple(self._handlers))
            if job is None:
                return count
            self._run(job)
            count += 1
        return count

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_pending()
            self._wakeup.wait(self._idle_poll_s)

    def _run(self, job: Job) -> None:
        handler = self._handlers[job.kind]
        try:
            with _LeaseKeeper(self._db, job, self._owner, self._lease_s, self._clock):
                again_in = handler(job.key)
        except HemexError as exc:
            log.warning("job failed kind=%s job=%d reason=%s", job.kind.value, job.id, exc)
            self._fail(job, exc, retry_at=None)
        except Exception as exc:
            log.exception("job error kind=%s job=%d attempt=%d", job.kind.value, job.id, job.attempts)
            retry = self._clock() + RETRY_DELAY_S * job.attempts if job.attempts < MAX_ATTEMPTS else None
            self._fail(job, exc, retry_at=retry)
        else:
            with self._db.transaction() as repos:
                if not repos.jobs.finish(job, self._owner, self._clock()):
                    log.warning("job lease lost kind=%s job=%d: another node took it over", job.kind.value, job.id)
                    return
                if again_in is not None:
                    now = self._clock()
                    repos.jobs.enqueue(job.kind, job.key, now + again_in, now)

    def _fail(self, job: Job, exc: Exception, retry_at: float | None) -> None:
        # jobs.last_error and the log: a library's message may quote a patient's value.
        reason = mask_quoted(str(exc) if isinstance(exc, HemexError) else f"{type(exc).__name__}: {exc}")
        reason = reason[:_REASON_CHARS]
        state = None
        reported = False
        with self._db.transaction() as repos:
            now = self._clock()
            final = repos.jobs.fail(job, self._owner, reason, now, retry_at)
            if final and job.kind in STUDY_JOBS and repos.studies.find(job.key) is not None:
                reported = repos.results.latest(job.key) is not None
                if not reported:
                    event = StudyEvent.NO_SERIES if isinstance(exc, NoAnalysableSeriesError) else StudyEvent.FAILED
                    state = repos.studies.record_event(job.key, event, now, reason)
                    repos.jobs.enqueue(JobKind.NOTIFY_NOT_ANALYSED, job.key, now, now)
        if state is not None:
            log.error("study not analysed study=%s job=%s state=%s reason=%s: notice queued", study_handle(job.key),
                      job.kind.value, state.value, reason)
            self._wakeup.notify()
        elif reported:
            log.error("study analysis failed study=%s job=%s reason=%s: its earlier report stands",
                      study_handle(job.key), job.kind.value, reason)


class _LeaseKeeper:
    """Renews a running job's lease every third of its length until the job ends."""

    def __init__(self, db: Database, job: Job, owner: str, lease_s: float, clock: Callable[[], float]) -> None:
        self._db, self._job, self._owner, self._lease_s, self._clock = db, job, owner, lease_s, clock
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="hemex-job-lease", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(self._lease_s / 3):
            with self._db.transaction() as repos:
                kept = repos.jobs.renew(self._job, self._owner, self._clock() + self._lease_s)
            if not kept:
                log.warning("job lease lost kind=%s job=%d", self._job.kind.value, self._job.id)
                return
