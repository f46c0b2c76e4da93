"""Retention never purges before delivery; a full disk refuses (A700 / AE) and recovers.

Synthetic tiny CT slices stored by the real InstanceStore; results and deliveries are
recorded through the repositories (their states are what retention reads). Disk full is simulated with
the min_free_disk_mb threshold, changed between two listeners on the same data dir.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from daemon.assemble.series_tracker import SeriesTracker
from daemon.config import Settings
from daemon.receive.instance_header import read_instance_header
from daemon.receive.instance_store import InstanceStore
from daemon.retention.purge import purge_expired
from daemon.state.database import Database
from domain.delivery import Channel, DeliveryRequest, DeliveryState
from domain.durable_files import write_atomically
from domain.handles import study_handle
from domain.jobs import JobKind
from domain.report import ReportBundle, ReportObject
from tests.support.databases import open_database
from tests.support.dicom_listener import send, start_receive_listener, tiny_ct
from tests.support.hl7_peers import MllpClient, adt, msa, start_intake

DAY = 86400.0


def _study(settings: Settings, db: Database, tmp_path: Path, outbox_state: DeliveryState | None,
           received_at: float) -> str:
    """A study with two stored images, a result folder and (optionally) one delivery."""
    study = generate_uid()
    store = InstanceStore(db, settings.spool_dir, 0, SeriesTracker(db, settings.series), clock=lambda: received_at)
    for i in range(2):
        path = tiny_ct(tmp_path / f"in/{study}/{i}.dcm", study, generate_uid(), i)
        store.store(read_instance_header(pydicom.dcmread(path)), path.read_bytes(), "STORESCU")
    folder = settings.results_dir / study[-12:] / "COMPLETE"
    write_atomically(folder / "sr.dcm", b"sr")
    write_atomically(folder / "seg.dcm", b"seg")
    objects = (ReportObject("seg.dcm", "SEG", generate_uid(), folder / "seg.dcm"),
               ReportObject("sr.dcm", "SR", generate_uid(), folder / "sr.dcm"))
    with db.transaction() as repos:
        repos.results.add(ReportBundle(study, f"test:{study}", "COMPLETE", "unavailable", folder, objects),
                          received_at)
        if outbox_state is not None:
            repos.outbox.enqueue(DeliveryRequest(Channel.DICOM, "pacs", objects[1].sop_instance_uid,
                                                 objects[1].path, study), received_at)
            (item,) = repos.outbox.items(study_uid=study)
            if outbox_state is DeliveryState.DELIVERED:
                repos.outbox.mark_delivered(item.id, received_at)
            elif outbox_state is DeliveryState.DEAD:
                repos.outbox.mark_dead(item.id, 1, "refused")
    return study


def _deliver_all(db: Database, study: str) -> None:
    with db.transaction() as repos:
        for item in repos.outbox.items(study_uid=study):
            repos.outbox.mark_delivered(item.id, time.time())


def test_retention_purges_old_delivered_studies_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", retention={"images_days": 30, "results_days": 60})
    db = open_database(settings.database_path)
    t0 = time.time()
    delivered = _study(settings, db, tmp_path, DeliveryState.DELIVERED, t0)
    pending = _study(settings, db, tmp_path, DeliveryState.PENDING, t0)
    dead = _study(settings, db, tmp_path, DeliveryState.DEAD, t0)
    recent = _study(settings, db, tmp_path, DeliveryState.DELIVERED, t0 + 20 * DAY)

    report = purge_expired(db, settings, now=t0 + 31 * DAY)
    assert not (settings.spool_dir / delivered).exists()
    for kept in (pending, dead, recent):
        assert len(list((settings.spool_dir / kept).rglob("*.dcm"))) == 2
    assert len(report.image_studies) == 1 and report.bytes_freed > 0
    assert report.result_folders == 0  # results are kept longer than images
    assert sorted(report.kept_undelivered) == sorted([study_handle(pending), study_handle(dead)])
    # A re-sent instance of a purged study is still a known duplicate (rows are kept).
    with db.reading() as repos:
        assert len([i for i in repos.images.instances() if i.study_uid == delivered]) == 2
        assert repos.maintenance.last_runs()["retention"][1]["image_studies_purged"] == 1

    report = purge_expired(db, settings, now=t0 + 61 * DAY)
    assert report.result_folders == 1  # only the delivered study's SR/SEG folder
    assert not (settings.results_dir / delivered[-12:]).exists()
    assert (settings.results_dir / pending[-12:] / "COMPLETE" / "sr.dcm").exists()

    _deliver_all(db, pending)  # the PACS came back: the pending item is delivered
    report = purge_expired(db, settings, now=t0 + 61 * DAY)
    assert not (settings.spool_dir / pending).exists()
    assert (settings.spool_dir / dead).exists()  # a dead letter keeps its files


def test_retention_keeps_a_study_with_an_open_job(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    db = open_database(settings.database_path)
    study = _study(settings, db, tmp_path, None, time.time())
    with db.transaction() as repos:
        repos.jobs.enqueue(JobKind.ANALYSE_STUDY, study, 0.0, 0.0)
    purge_expired(db, settings, now=time.time() + 365 * DAY)
    assert (settings.spool_dir / study).is_dir()


def test_retention_disabled_purges_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", retention={"enabled": False})
    db = open_database(settings.database_path)
    study = _study(settings, db, tmp_path, DeliveryState.DELIVERED, time.time())
    report = purge_expired(db, settings, now=time.time() + 365 * DAY)
    assert (settings.spool_dir / study).is_dir() and not report.image_studies


def test_dicom_disk_full_refuses_then_recovers_on_the_same_data_dir(tmp_path: Path) -> None:
    path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
    full = start_receive_listener(tmp_path, min_free_disk_mb=10**9)
    try:
        assert send(full.port, path) == 0xA700
        assert full.count() == 0
    finally:
        full.stop()
    recovered = start_receive_listener(tmp_path, min_free_disk_mb=0)
    try:
        assert send(recovered.port, path) == 0x0000  # the scanner's retry now succeeds
        assert recovered.count() == 1
        assert len(list(recovered.spool.rglob("*.dcm"))) == 1
    finally:
        recovered.stop()


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


def test_orphan_temporary_files_are_removed_at_start(tmp_path: Path) -> None:
    """A kill -9 during a write leaves ``.<name>.<host>.<pid>.<thread>.tmp`` beside its
    target, and a partly received object in the process's folder under ``tmp/``; the next
    start removes those of this host's processes that are gone, and nothing else (the data
    directory may be shared with nodes on other hosts, or with a running process)."""
    import subprocess
    import sys

    from daemon.app import Node
    from domain.durable_files import HOST_TAG
    from tests.support.node_settings import loopback_node_settings
    from tests.support.peers import wait_until

    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that ran and is gone
    gone.wait()
    dead = gone.pid
    settings = loopback_node_settings(tmp_path / "node", hl7={"enabled": False})
    series = settings.spool_dir / "1.2.3" / "1.2.3.4"
    kept = [series / "1.2.3.4.5.dcm",
            series / f".1.2.3.4.7.dcm.deadbeef.{dead}.1.tmp",             # another host's
            series / f".1.2.3.4.8.dcm.{HOST_TAG}.{os.getppid()}.1.tmp"]   # a running process's
    orphans = [series / f".1.2.3.4.6.dcm.{HOST_TAG}.{dead}.1.tmp",
               settings.results_dir / "abc" / f".sr.dcm.{HOST_TAG}.{dead}.7.tmp",
               settings.data_dir / "hl7" / "2026-01-01" / f".x.hl7.{HOST_TAG}.{dead}.9.tmp",
               settings.data_dir / "tmp" / f"{HOST_TAG}.{dead}" / "tmpk2j3h4.dcm"]
    for path in [*kept, *orphans]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    node = Node(settings)
    node.start()
    try:
        # The receive folders are cleaned before the listeners open; the tree is walked by
        # a one-off scheduled job (a large spool must not delay the listeners).
        assert not orphans[-1].exists()
        wait_until(lambda: not any(path.exists() for path in orphans), timeout_s=10.0)
        assert all(path.exists() for path in kept)
    finally:
        node.stop()


def test_retention_purges_follow_up_report_folders_too(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    from domain.followup import FollowupRules, Role, VolumeReading, observe_change
    from domain.outcomes import FollowupBundle, ObservedOutcome

    settings = Settings(data_dir=tmp_path / "data", retention={"images_days": 30, "results_days": 60})
    db = open_database(settings.database_path)
    at = datetime(2026, 1, 1, 8, 0)
    change = observe_change(VolumeReading(10.0, "m", "1", at), VolumeReading(12.0, "m", "1", at + timedelta(hours=24)),
                            FollowupRules())
    outcome = ObservedOutcome("1.1", "st-b", "1.2", "st-f", at, at + timedelta(hours=24), Role.FOLLOWUP, change,
                              "m", "1", "m", "1", None, None, "0.1.0")
    folder = settings.results_dir / "st-f" / "20260102T080000.000-followup"
    folder.mkdir(parents=True)
    (folder / "followup-sr.dcm").write_bytes(b"sr")
    t0 = time.time()
    with db.transaction() as repos:
        repos.followups.add_report(FollowupBundle("1.2", "1.1", "report_followup:x", folder, outcome, ()), t0)
    assert purge_expired(db, settings, now=t0 + 59 * DAY).result_folders == 0
    assert purge_expired(db, settings, now=t0 + 61 * DAY).result_folders == 1 and not folder.exists()
