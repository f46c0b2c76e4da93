"""Retention never purges before delivery; a full disk refuses (A700 / AE) and recovers.

Synthetic tiny CT slices stored by the real InstanceStore; outbox and results rows are
written directly (their states are what retention reads). Disk full is simulated with
the min_free_disk_mb threshold, changed between two listeners on the same data dir.
"""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from daemon.config import Settings
from daemon.receive.instance_store import InstanceHeader, InstanceStore
from daemon.state.database import Database
from daemon.state.retention import purge_expired
from domain.durable_files import write_atomically
from domain.handles import study_handle
from tests.support.hl7_peers import MllpClient, adt, msa, start_intake
from tests.test_dicom_listener import _start, tiny_ct
from tests.test_hostile_dicom import _send

DAY = 86400.0


def _study(settings: Settings, db: Database, tmp_path: Path, outbox_state: str | None, received_at: float) -> str:
    study = generate_uid()
    store = InstanceStore(db, settings.spool_dir, 0, clock=lambda: received_at)
    for i in range(2):
        path = tiny_ct(tmp_path / f"in/{study}/{i}.dcm", study, generate_uid(), i)
        store.store(InstanceHeader.from_dataset(pydicom.dcmread(path)), path.read_bytes(), "STORESCU")
    folder = settings.results_dir / study[-12:] / "COMPLETE"
    write_atomically(folder / "sr.dcm", b"sr")
    write_atomically(folder / "seg.dcm", b"seg")
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO results(study_uid, status, sr_sop_uid, sr_path, seg_path, summary_json, created_at)"
            " VALUES (?, 'COMPLETE', ?, ?, ?, '{}', ?)",
            (study, generate_uid(), str(folder / "sr.dcm"), str(folder / "seg.dcm"), received_at))
        if outbox_state is not None:
            conn.execute(
                "INSERT INTO outbox(channel, destination, item_key, path, study_uid, state, next_attempt_at,"
                " created_at) VALUES ('dicom', 'pacs', ?, ?, ?, ?, 0, ?)",
                (generate_uid(), str(folder / "sr.dcm"), study, outbox_state, received_at))
    return study


def test_retention_purges_old_delivered_studies_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", retention={"images_days": 30, "results_days": 60})
    db = Database(settings.database_path)
    t0 = time.time()
    delivered = _study(settings, db, tmp_path, "delivered", t0)
    pending = _study(settings, db, tmp_path, "pending", t0)
    dead = _study(settings, db, tmp_path, "dead", t0)
    recent = _study(settings, db, tmp_path, "delivered", t0 + 20 * DAY)

    report = purge_expired(db, settings, now=t0 + 31 * DAY)
    assert not (settings.spool_dir / delivered).exists()
    for kept in (pending, dead, recent):
        assert len(list((settings.spool_dir / kept).rglob("*.dcm"))) == 2
    assert len(report.image_studies) == 1 and report.bytes_freed > 0
    assert report.result_folders == 0  # results are kept longer than images
    assert sorted(report.kept_undelivered) == sorted([study_handle(pending), study_handle(dead)])
    # A re-sent instance of a purged study is still a known duplicate (rows are kept).
    assert db.query("SELECT COUNT(*) FROM instances WHERE study_uid = ?", (delivered,))[0][0] == 2

    report = purge_expired(db, settings, now=t0 + 61 * DAY)
    assert report.result_folders == 1  # only the delivered study's SR/SEG folder
    assert not (settings.results_dir / delivered[-12:]).exists()
    assert (settings.results_dir / pending[-12:] / "COMPLETE" / "sr.dcm").exists()

    with db.transaction() as conn:  # the PACS came back: the pending item is delivered
        conn.execute("UPDATE outbox SET state = 'delivered' WHERE study_uid = ?", (pending,))
    report = purge_expired(db, settings, now=t0 + 61 * DAY)
    assert not (settings.spool_dir / pending).exists()
    assert (settings.spool_dir / dead).exists()  # a dead letter keeps its files


def test_retention_keeps_a_study_with_an_open_job(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    db = Database(settings.database_path)
    study = _study(settings, db, tmp_path, None, time.time())
    with db.transaction() as conn:
        conn.execute("INSERT INTO jobs(kind, key, state, run_after, created_at, updated_at)"
                     " VALUES ('analyse_study', ?, 'pending', 0, 0, 0)", (study,))
    purge_expired(db, settings, now=time.time() + 365 * DAY)
    assert (settings.spool_dir / study).is_dir()


def test_retention_disabled_purges_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", retention={"enabled": False})
    db = Database(settings.database_path)
    study = _study(settings, db, tmp_path, "delivered", time.time())
    report = purge_expired(db, settings, now=time.time() + 365 * DAY)
    assert (settings.spool_dir / study).is_dir() and not report.image_studies


def test_dicom_disk_full_refuses_then_recovers_on_the_same_data_dir(tmp_path: Path) -> None:
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
    full, server = _start(tmp_path, min_free_disk_mb=10**9)
    try:
        assert _send(full.port, path) == 0xA700
        assert full.db.query("SELECT COUNT(*) FROM instances")[0][0] == 0
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    recovered, server = _start(tmp_path, min_free_disk_mb=0)
    try:
        assert _send(recovered.port, path) == 0x0000  # the scanner's retry now succeeds
        assert recovered.db.query("SELECT COUNT(*) FROM instances")[0][0] == 1
        assert len(list(recovered.spool.rglob("*.dcm"))) == 1
    finally:
        server.shutdown()  # type: ignore[attr-defined]


def test_hl7_disk_full_answers_ae_then_recovers_on_the_same_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    intake = start_intake(data, min_free_disk_mb=10**9)
    try:
        with MllpClient(intake.port) as client:
            assert msa(client.send(adt("DISK-1")))[1] == "AE"
        assert intake.messages() == []
    finally:
        intake.listener.stop()
        intake.processor.stop()
    intake = start_intake(data, min_free_disk_mb=0)
    try:
        with MllpClient(intake.port) as client:
            assert msa(client.send(adt("DISK-1")))[1] == "AA"  # the sender's resend is stored
        assert len(intake.messages()) == 1
    finally:
        intake.listener.stop()
        intake.processor.stop()
