"""The durable job table and the runner: ordering, re-runs, retries, resumption after a
crash, and the study state every outcome leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.jobs.runner import MAX_ATTEMPTS, JobRunner
from daemon.state.database import Database
from domain.errors import NoAnalysableSeriesError, UnsupportedSeriesError
from domain.jobs import JobKind, JobState
from domain.report import ReportBundle, ReportObject
from domain.study import ReceivedInstance, StudyEvent, StudyState
from tests.support.databases import open_database

KIND = JobKind.ANALYSE_STUDY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(tmp_path / "db.sqlite3")


def _state(db: Database, key: str, kind: JobKind = KIND) -> JobState | None:
    with db.reading() as repos:
        return repos.jobs.state_of(kind, key)


def _study(db: Database, study_uid: str) -> None:
    instance = ReceivedInstance("1.2.3.4", "1.2.840.10008.5.1.4.1.1.2", study_uid, study_uid + ".1", "CT", "",
                                None, None, None, None, None)
    with db.transaction() as repos:
        repos.images.record(instance, Path("/x"), 1, "CT", 0.0, 0.0)


def test_jobs_run_when_due_and_once(db: Database) -> None:
    clock = Clock()
    with db.transaction() as repos:
        repos.jobs.enqueue(KIND, "1.2.3", clock.now + 10, clock.now)
        repos.jobs.enqueue(KIND, "1.2.3", clock.now + 10, clock.now)  # same key: still one job
        assert repos.jobs.claim_next(clock.now, "a", 60) is None
        clock.now += 10
        job = repos.jobs.claim_next(clock.now, "a", 60)
        assert job is not None and job.key == "1.2.3" and job.attempts == 1
        assert repos.jobs.claim_next(clock.now, "b", 60) is None  # claimed: not due for another node
        assert repos.jobs.finish(job, "a", clock.now)
    assert _state(db, "1.2.3") is JobState.DONE


def test_a_job_queued_while_it_runs_runs_once_more(db: Database) -> None:
    """A better series completing while the study is analysed is analysed too."""
    ran: list[str] = []

    def handler(key: str) -> None:
        ran.append(key)
        if len(ran) == 1:  # new images arrived meanwhile: the study is queued again
            with db.transaction() as repos:
                repos.jobs.enqueue(KIND, key, 0.0, 0.0)

    with db.transaction() as repos:
        repos.jobs.enqueue(KIND, "7.7", 0.0, 0.0)
    assert JobRunner(db, {KIND: handler}).run_pending() == 2
    assert ran == ["7.7", "7.7"] and _state(db, "7.7") is JobState.DONE


def test_running_jobs_resume_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    first = open_database(path)
    with first.transaction() as repos:
        repos.jobs.enqueue(KIND, "9.9", 0.0, 0.0)
        assert repos.jobs.claim_next(1.0, "node-a", 60) is not None
    # The same node restarts on the same database: the job it left running runs again.
    restarted = open_database(path)
    assert JobRunner(restarted, {}, owner="node-b").resume_interrupted() == 0  # not node-b's
    assert JobRunner(restarted, {}, owner="node-a").resume_interrupted() == 1
    with restarted.transaction() as repos:
        job = repos.jobs.claim_next(2.0, "node-a", 60)
    assert job is not None and job.attempts == 2


def test_another_node_takes_a_job_over_when_its_lease_runs_out(db: Database) -> None:
    with db.transaction() as repos:
        repos.jobs.enqueue(KIND, "4.4", 0.0, 0.0)
        job = repos.jobs.claim_next(100.0, "node-a", 60)
        assert job is not None
        assert repos.jobs.claim_next(150.0, "node-b", 60) is None  # node-a's lease holds
        assert repos.jobs.renew(job, "node-a", 200.0)  # node-a is alive and renews
        assert repos.jobs.claim_next(190.0, "node-b", 60) is None
        taken = repos.jobs.claim_next(201.0, "node-b", 60)  # node-a died: the lease ran out
        assert taken is not None and taken.id == job.id and taken.attempts == 2
        assert not repos.jobs.renew(job, "node-a", 300.0)  # node-a lost it
        assert not repos.jobs.finish(job, "node-a", 202.0)  # a late outcome of node-a counts for nothing
        assert repos.jobs.finish(taken, "node-b", 203.0)
    assert _state(db, "4.4") is JobState.DONE


def test_a_handler_may_ask_to_run_again_later(db: Database) -> None:
    clock = Clock()
    calls: list[float] = []

    def handler(key: str) -> float | None:
        calls.append(clock.now)
        return 5.0 if len(calls) == 1 else None

    runner = JobRunner(db, {KIND: handler}, clock=clock)
    with db.transaction() as repos:
        repos.jobs.enqueue(KIND, "3.3", clock.now, clock.now)
    assert runner.run_pending() == 1 and _state(db, "3.3") is JobState.PENDING
    clock.now += 5
    assert runner.run_pending() == 1 and _state(db, "3.3") is JobState.DONE


def test_an_explained_failure_fails_the_job_and_the_study_for_good(db: Database) -> None:
    _study(db, "5.5")

    def handler(key: str) -> None:
        raise UnsupportedSeriesError("gantry tilt 40 degrees cannot be corrected")

    with db.transaction() as repos:
        repos.jobs.enqueue(KIND, "5.5", 0.0, 0.0)
    JobRunner(db, {KIND: handler}).run_pending()
    with db.reading() as repos:
        status = repos.studies.status("5.5")
        assert repos.jobs.state_of(KIND, "5.5") is JobState.FAILED
        assert repos.jobs.last_error(KIND, "5.5") == "gantry tilt 40 degrees cannot be corrected"
    assert status.state is StudyState.FAILED and status.reason == "gantry tilt 40 degrees cannot be corrected"
    # ...and its "not analysed" notice is queued in the same transaction.
    assert _notice(db, "5.5") is JobState.PENDING


def test_no_analysable_series_leaves_the_study_no_series_with_the_reasons(db: Database) -> None:
    _study(db, "6.6")

    def handler(key: str) -> None:
        raise NoAnalysableSeriesError("no series meets the selection rules: localizer (scout) images")

    with db.transaction() as repos:
        repos.jobs.enqueue(KIND, "6.6", 0.0, 0.0)
    JobRunner(db, {KIND: handler}).run_pending()
    with db.reading() as repos:
        status = repos.studies.status("6.6")
    assert status.state is StudyState.NO_SERIES and "localizer" in (status.reason or "")
    assert _notice(db, "6.6") is JobState.PENDING


def _notice(db: Database, study: str) -> JobState | None:
    with db.reading() as repos:
        return repos.jobs.state_of(JobKind.NOTIFY_NOT_ANALYSED, study)


def test_a_bug_is_retried_then_fails_the_study(db: Database) -> None:
    clock = Clock()
    _study(db, "8.8")

    def handler(key: str) -> None:
        raise KeyError("a bug")

    runner = JobRunner(db, {KIND: handler}, clock=clock)
    with db.transaction() as repos:
        repos.jobs.enqueue(KIND, "8.8", clock.now, clock.now)
    for _ in range(MAX_ATTEMPTS):
        assert runner.run_pending() == 1
        clock.now += 1000
    with db.reading() as repos:
        status = repos.studies.status("8.8")
        assert repos.jobs.state_of(KIND, "8.8") is JobState.FAILED
    # Quoted text is masked in every failure reason: a library's message may quote a patient's value.
    assert status.state is StudyState.FAILED and status.reason == "KeyError: '***'"
    # Queued again (new images, or `hemex replay`), a failed job runs again.
    with db.transaction() as repos:
        repos.jobs.enqueue(KIND, "8.8", clock.now, clock.now)
    assert _state(db, "8.8") is JobState.PENDING


def test_a_failed_reanalysis_leaves_the_earlier_report_standing(db: Database, tmp_path: Path) -> None:
    """A better series arrived and its analysis failed: the study keeps its report and
    its state, and no "not analysed" notice goes out over it."""
    _study(db, "9.9")
    bundle = ReportBundle("9.9", "analyse_study:digest", "COMPLETE", "unavailable", tmp_path,
                          (ReportObject("sr.dcm", "SR", "2.25.1", tmp_path / "sr.dcm"),))
    with db.transaction() as repos:
        repos.results.add(bundle, 0.0)
        repos.studies.record_event("9.9", StudyEvent.ANALYSIS_STARTED, 0.0)
        repos.studies.record_event("9.9", StudyEvent.FINAL_DISPATCHED, 0.0)
        repos.jobs.enqueue(KIND, "9.9", 0.0, 0.0)

    def handler(key: str) -> None:
        raise UnsupportedSeriesError("slices missing")

    JobRunner(db, {KIND: handler}).run_pending()
    with db.reading() as repos:
        assert repos.studies.status("9.9").state is StudyState.FINAL
        assert repos.jobs.state_of(KIND, "9.9") is JobState.FAILED
    assert _notice(db, "9.9") is None
