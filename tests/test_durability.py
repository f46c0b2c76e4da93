"""``dicom.durability``: what a C-STORE success waits for, and shared commits.

"power-loss": the spool file and its folder are fsynced and the row committed durably
before ``InstanceStore.store`` returns. "process-crash": nothing waits for the disk, and
the write-back sync runs within its interval. Concurrent associations (real dcmtk
storescu processes) share commits. A kill -9 at any moment loses nothing acknowledged
under either level: tests/test_crash_safety.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from daemon.assemble.series_tracker import SeriesTracker
from daemon.config import SeriesCompletionSettings
from daemon.receive.instance_store import InstanceStore
from daemon.state.database import Database
from domain import durable_files
from domain.study import ReceivedInstance
from tests.support.databases import open_database
from tests.support.dicom_listener import start_receive_listener, storescu, tiny_ct


def _instance(study: str, series: str) -> ReceivedInstance:
    return ReceivedInstance(sop_instance_uid=generate_uid(), sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                            study_uid=study, series_uid=series, modality="CT", series_description="",
                            patient_id="DURABILITY", issuer_of_patient_id=None, accession_number=None,
                            study_datetime=None, expected_images=None)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "db.sqlite3")
    yield database
    database.close()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths os.fsync is called on by domain.durable_files, in order."""
    calls: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(durable_files.os, "fsync", recording_fsync)
    return calls


def _store(db: Database, tmp_path: Path, durability: str, interval_s: float = 1.0) -> InstanceStore:
    return InstanceStore(db, tmp_path / "spool", 0, SeriesTracker(db, SeriesCompletionSettings()),
                         durability=durability, write_back_interval_s=interval_s)  # type: ignore[arg-type]


def test_power_loss_fsyncs_file_and_folders_before_the_answer(db: Database, tmp_path: Path,
                                                              fsynced: list[str]) -> None:
    store = _store(db, tmp_path, "power-loss")
    study, series = generate_uid(), generate_uid()
    first = store.store(_instance(study, series), b"first", "STORESCU")
    series_dir = tmp_path / "spool" / study / series
    # new folders: each one's name is synced in its parent; then the file, then its folder
    assert fsynced == [str(tmp_path / "spool"), str(tmp_path / "spool" / study),
                       fsynced[2], str(series_dir)]
    assert Path(fsynced[2]).parent == series_dir and fsynced[2].endswith(".tmp")  # before the rename
    fsynced.clear()
    second = store.store(_instance(study, series), b"second", "STORESCU")
    assert len(fsynced) == 2 and fsynced[1] == str(series_dir)
    assert first.path.read_bytes() == b"first" and second.path.read_bytes() == b"second"
    assert store.write_back is None
    with db.reading() as repos:
        assert repos.images.series_instance_count(series) == 2
    store.close()


def test_process_crash_waits_for_no_disk_and_syncs_within_the_interval(db: Database, tmp_path: Path,
                                                                       fsynced: list[str]) -> None:
    store = _store(db, tmp_path, "process-crash", interval_s=0.2)
    assert store.write_back is not None
    outcome = store.store(_instance(generate_uid(), generate_uid()), b"data", "STORESCU")
    assert fsynced == []  # the answer did not wait for the disk
    assert outcome.path.read_bytes() == b"data"
    with db.reading() as repos:
        assert repos.images.holds(outcome.instance.sop_instance_uid)
    synced = threading.Event()
    for _ in range(100):  # the sync comes within the interval (bounded poll, 5 s at most)
        if store.write_back.syncs >= 1:
            synced.set()
            break
        synced.wait(0.05)
    assert synced.is_set()
    store.close()


@pytest.mark.parametrize("durable", [True, False])
def test_transaction_durability_is_the_database_sync_level(db: Database, durable: bool) -> None:
    with db.transaction(durable=durable) as repos:
        if db.dialect == "sqlite":
            level = repos.connection.exec_driver_sql("PRAGMA synchronous").scalar()
            assert level == (2 if durable else 1)  # FULL: synced at commit; NORMAL: in WAL, not synced
        else:
            setting = repos.connection.exec_driver_sql("SHOW synchronous_commit").scalar()
            assert setting == ("on" if durable else "off")
    with db.transaction() as repos:  # the pooled connection is durable again for the next one
        if db.dialect == "sqlite":
            assert repos.connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        else:
            assert repos.connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


@pytest.mark.parametrize("durability", ["power-loss", "process-crash"])
def test_parallel_associations_share_commits_and_lose_nothing(tmp_path: Path, durability: str) -> None:
    listener = start_receive_listener(tmp_path / "node", durability=durability)
    try:
        series = []
        for scanner in range(4):
            study, uid = generate_uid(), generate_uid()
            series.append((uid, [tiny_ct(tmp_path / f"in{scanner}/{i}.dcm", study, uid, i) for i in range(12)]))
        results: list[int] = []
        threads = [threading.Thread(target=lambda files=files: results.append(storescu(listener.port, files).returncode))
                   for _, files in series]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert results == [0, 0, 0, 0]
        for uid, _ in series:
            assert len(listener.instances(uid)) == 12
        figures = listener.store.commits.figures
        assert figures.items == 48 and figures.batches <= 48
    finally:
        listener.stop()


def test_a_uid_held_under_another_series_is_a_duplicate_and_leaves_no_file(tmp_path: Path) -> None:
    listener = start_receive_listener(tmp_path / "node")
    try:
        path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
        assert storescu(listener.port, [path]).returncode == 0
        import pydicom

        moved = pydicom.dcmread(path)
        moved.SeriesInstanceUID = generate_uid()  # same SOP Instance UID, another series
        moved.save_as(tmp_path / "in/moved.dcm", enforce_file_format=True)
        assert storescu(listener.port, [tmp_path / "in/moved.dcm"]).returncode == 0  # acknowledged once more
        assert listener.count() == 1
        assert len(list(listener.spool.rglob("*.dcm"))) == 1  # the second copy was removed
    finally:
        listener.stop()
