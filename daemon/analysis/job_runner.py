"""One worker thread that runs durable jobs one at a time (the GPU is used by one study
at a time; models stay loaded in this process)."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Mapping

from daemon.state.job_queue import Job, JobQueue
from domain.errors import HemexError

log = logging.getLogger(__name__)

JobHandler = Callable[[str], None]

# Unexpected errors (a bug, a transient resource problem) are retried a few times with
# a growing delay, then the job is left failed for an operator to look at.
MAX_ATTEMPTS = 3
RETRY_DELAY_S = 30.0


class JobRunner:
    def __init__(self, jobs: JobQueue, handlers: Mapping[str, JobHandler], idle_poll_s: float = 1.0) -> None:
        self._jobs = jobs
        self._handlers = handlers
        self._idle_poll_s = idle_poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hemex-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def run_pending(self) -> int:
        """Run every due job now (used by the loop and by tests). Returns how many ran."""
        count = 0
        while not self._stop.is_set():
            job = self._jobs.claim_next()
            if job is None:
                return count
            self._run(job)
            count += 1
        return count

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_pending()
            self._wake.wait(self._idle_poll_s)
            self._wake.clear()

    def _run(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        if handler is None:
            self._jobs.fail(job, f"no handler for job kind {job.kind}")
            return
        try:
            handler(job.key)
        except HemexError as exc:
            # A known, explained failure (no analysable series, bad geometry...): final.
            log.warning("job failed kind=%s job=%d reason=%s", job.kind, job.id, exc)
            self._jobs.fail(job, str(exc))
        except Exception as exc:  # noqa: BLE001 - recorded durably and retried, not swallowed
            log.error("job error kind=%s job=%d attempt=%d error=%s\n%s", job.kind, job.id,
                      job.attempts, exc, traceback.format_exc())
            retry = RETRY_DELAY_S * job.attempts if job.attempts < MAX_ATTEMPTS else None
            self._jobs.fail(job, f"{type(exc).__name__}: {exc}", retry_in_s=retry)
        else:
            self._jobs.finish(job)
