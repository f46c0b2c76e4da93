"""Series tracking with an injected clock: quiet periods, studies with several series,
the expected image count, and durable timers that a restarted node (or another one)
finds in the database."""

from __future__ import annotations

from pathlib import Path

from daemon.assemble.series_tracker import SeriesTracker
from daemon.config import SeriesCompletionSettings
from daemon.receive.instance_store import InstanceStore
from daemon.state.database import Database
from domain.jobs import JobKind, JobState
from domain.study import ReceivedInstance, StudyState
from tests.support.databases import open_database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _instance(study: str, series: str, sop: str, expected: int | None = None) -> ReceivedInstance:
    return ReceivedInstance(sop, "1.2.840.10008.5.1.4.1.1.2", study, series, "CT", "Head", "P1", "HOSP",
                            "ACC1", "20261122120000", expected)


def _node(db_path: Path, clock: Clock, quiet_s: float) -> tuple[Database, InstanceStore, SeriesTracker]:
    db = open_database(db_path)
    tracker = SeriesTracker(db, SeriesCompletionSettings(quiet_period_s=quiet_s), clock=clock)
    return db, InstanceStore(db, db_path.parent / "spool", 0, tracker, clock=clock), tracker


def _analysis_job(db: Database, study: str) -> JobState | None:
    with db.reading() as repos:
        return repos.jobs.state_of(JobKind.ANALYSE_STUDY, study)


def test_study_is_queued_once_all_its_series_are_quiet(tmp_path: Path) -> None:
    clock = Clock()
    db, store, tracker = _node(tmp_path / "db.sqlite3", clock, quiet_s=5.0)
    store.store(_instance("1.1", "1.1.1", "1.1.1.1"), b"x", "STORESCU")
    clock.now += 3
    store.store(_instance("1.1", "1.1.2", "1.1.2.1"), b"x", "STORESCU")
    clock.now += 2.5  # the first series is quiet, the second is not
    assert tracker.check_due() == 1
    assert _analysis_job(db, "1.1") is None
    with db.reading() as repos:
        assert repos.studies.status("1.1").state is StudyState.RECEIVED
    clock.now += 2.5
    assert tracker.check_due() == 1
    assert _analysis_job(db, "1.1") is JobState.PENDING
    with db.reading() as repos:
        assert repos.studies.status("1.1").state is StudyState.COMPLETE
    assert tracker.check_due() == 0  # nothing open any more


def test_expected_count_completes_without_waiting(tmp_path: Path) -> None:
    clock = Clock()
    db, store, _ = _node(tmp_path / "db.sqlite3", clock, quiet_s=3600)
    for i in range(2):
        store.store(_instance("2.1", "2.1.1", f"2.1.1.{i}", expected=2), b"x", "STORESCU")
    assert _analysis_job(db, "2.1") is JobState.PENDING


def test_an_image_after_completion_reopens_the_series_and_the_study(tmp_path: Path) -> None:
    clock = Clock()
    db, store, tracker = _node(tmp_path / "db.sqlite3", clock, quiet_s=5.0)
    store.store(_instance("4.1", "4.1.1", "4.1.1.1"), b"x", "STORESCU")
    clock.now += 6
    tracker.check_due()
    store.store(_instance("4.1", "4.1.1", "4.1.1.2"), b"x", "STORESCU")
    with db.reading() as repos:
        assert repos.studies.status("4.1").state is StudyState.RECEIVED
        assert repos.images.open_series() == ["4.1.1"]


def test_open_series_timers_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    _, store, _ = _node(tmp_path / "db.sqlite3", clock, quiet_s=30.0)
    store.store(_instance("3.1", "3.1.1", "3.1.1.1"), b"x", "STORESCU")
    # The process "dies"; a new one opens the same database later.
    clock.now += 31
    db, _, tracker = _node(tmp_path / "db.sqlite3", clock, quiet_s=30.0)
    assert tracker.check_due() == 1
    assert _analysis_job(db, "3.1") is JobState.PENDING
