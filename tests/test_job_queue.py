"""The durable job table: ordering, retries, and resumption after a crash."""

from pathlib import Path

from daemon.state.database import Database
from daemon.state.job_queue import JobQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_jobs_run_when_due_and_once(tmp_path: Path) -> None:
    clock = Clock()
    jobs = JobQueue(Database(tmp_path / "db.sqlite3"), clock)
    jobs.enqueue("analyse_study", "1.2.3", delay_s=10)
    jobs.enqueue("analyse_study", "1.2.3", delay_s=10)  # same key: still one job
    assert jobs.claim_next() is None
    clock.now += 10
    job = jobs.claim_next()
    assert job is not None and job.key == "1.2.3" and job.attempts == 1
    assert jobs.claim_next() is None
    jobs.finish(job)
    assert jobs.state_of("analyse_study", "1.2.3") == "done"


def test_running_jobs_resume_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    jobs = JobQueue(Database(path))
    jobs.enqueue("analyse_study", "9.9")
    assert jobs.claim_next() is not None
    # A new process opens the same database: the job left running is pending again.
    restarted = JobQueue(Database(path))
    assert restarted.resume_interrupted() == 1
    job = restarted.claim_next()
    assert job is not None and job.attempts == 2


def test_failed_job_retries_later_or_stays_failed(tmp_path: Path) -> None:
    clock = Clock()
    jobs = JobQueue(Database(tmp_path / "db.sqlite3"), clock)
    jobs.enqueue("k", "a")
    job = jobs.claim_next()
    assert job is not None
    jobs.fail(job, "transient", retry_in_s=30)
    assert jobs.claim_next() is None
    clock.now += 30
    job = jobs.claim_next()
    assert job is not None
    jobs.fail(job, "final")
    assert jobs.state_of("k", "a") == "failed"
    # Re-queueing a failed job (e.g. a new image arrived) starts it again.
    jobs.enqueue("k", "a")
    assert jobs.state_of("k", "a") == "pending"
