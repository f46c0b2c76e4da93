"""Series tracking with a real APScheduler: quiet periods, studies with several series,
and re-arming open series after a restart."""

from __future__ import annotations

from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from daemon.assemble.series_tracker import ANALYSE_STUDY, SeriesTracker
from daemon.config import SeriesCompletionSettings
from daemon.receive.instance_store import InstanceHeader, InstanceStore
from daemon.state.database import Database
from daemon.state.job_queue import JobQueue
from tests.support.peers import wait_until


def _header(study: str, series: str, sop: str, expected: int | None = None) -> InstanceHeader:
    return InstanceHeader(sop, "1.2.840.10008.5.1.4.1.1.2", study, series, "CT", "Head", "P1", "HOSP",
                          "ACC1", "20261122120000", expected)


def _node(db_path: Path, quiet_s: float) -> tuple[InstanceStore, SeriesTracker, JobQueue, BackgroundScheduler]:
    db = Database(db_path)
    jobs = JobQueue(db)
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start()
    tracker = SeriesTracker(db, jobs, scheduler, SeriesCompletionSettings(quiet_period_s=quiet_s))
    store = InstanceStore(db, db_path.parent / "spool", 0, on_stored=tracker.instance_stored)
    return store, tracker, jobs, scheduler


def test_study_is_queued_once_all_its_series_are_quiet(tmp_path: Path) -> None:
    store, _, jobs, scheduler = _node(tmp_path / "db.sqlite3", quiet_s=0.5)
    try:
        store.store(_header("1.1", "1.1.1", "1.1.1.1"), b"x", "STORESCU")
        store.store(_header("1.1", "1.1.2", "1.1.2.1"), b"x", "STORESCU")
        assert jobs.state_of(ANALYSE_STUDY, "1.1") is None
        wait_until(lambda: jobs.state_of(ANALYSE_STUDY, "1.1") == "pending", timeout_s=10)
    finally:
        scheduler.shutdown()


def test_expected_count_completes_without_waiting(tmp_path: Path) -> None:
    store, _, jobs, scheduler = _node(tmp_path / "db.sqlite3", quiet_s=3600)
    try:
        for i in range(2):
            store.store(_header("2.1", "2.1.1", f"2.1.1.{i}", expected=2), b"x", "STORESCU")
        assert jobs.state_of(ANALYSE_STUDY, "2.1") == "pending"
    finally:
        scheduler.shutdown()


def test_open_series_resume_after_restart(tmp_path: Path) -> None:
    store, _, jobs, scheduler = _node(tmp_path / "db.sqlite3", quiet_s=3600)
    store.store(_header("3.1", "3.1.1", "3.1.1.1"), b"x", "STORESCU")
    scheduler.shutdown(wait=False)  # the process "dies": the timer is gone
    _, tracker, jobs, scheduler = _node(tmp_path / "db.sqlite3", quiet_s=0.2)
    try:
        assert tracker.resume_open_series() == 1
        wait_until(lambda: jobs.state_of(ANALYSE_STUDY, "3.1") == "pending", timeout_s=10)
    finally:
        scheduler.shutdown()
