"""kill -9 of the whole node (`hemex serve` in a child process) while a scanner sends,
analysis jobs run and deliveries go out; it restarts on the same data dir each time.

The scanner is dcmtk storescu, the PACS a counting C-STORE SCP (Orthanc would silently
overwrite a re-sent SOP Instance UID, hiding a double send), alerts go to an HTTP
webhook. The CT studies are synthetic phantoms (tests/support/phantoms.py), small so the
run stays short; dciodvfy validation of the SR/SEG is off here (tests/test_report_builders.py
and tests/test_end_to_end.py cover it). The loop itself is bench/kill_loop_node.py.

What the loop found is pinned by tests that die (or look) at the exact point: a death
between a series' completion and its analysis job, a PACS's success and the outbox
commit inside one association, and a SIGTERM right after start-up.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pydicom
import pytest

from bench.kill_loop_node import failures, node_kill_loop
from daemon.assemble.series_tracker import SeriesTracker
from daemon.config import DicomDestination, OutboxSettings, SeriesCompletionSettings
from daemon.deliver.dicom_sender import DicomStoreChannel
from daemon.deliver.outbox import Outbox
from daemon.receive.instance_header import read_instance_header
from daemon.receive.instance_store import InstanceStore
from daemon.state.job_repository import JobRepository
from domain.delivery import Channel, DeliveryRequest
from domain.jobs import JobKind, JobState
from tests.support.counting_pacs import CountingPacs, Reception
from tests.support.databases import open_database
from tests.support.node_process import NodeDatabase, NodeProcess, write_node_config
from tests.support.peers import free_port
from tests.support.phantoms import make_head_ct_series

pytestmark = pytest.mark.integration

DIED = 77  # exit status of a child that died where the test made it die


def test_whole_node_survives_kill_9_at_random_points(tmp_path: Path) -> None:
    # Kill 1 lands after a random number (up to half) of the scanner's instances were
    # stored, kill 2 within 0.3 s of an analysis or report job starting (here an analysis
    # takes about 0.3 s and a report 0.7 s; a job that ends first passes the kill on to
    # the next one), kill 3 just after the PACS received its first object of that run,
    # while the scanner sends the second study.
    tally = node_kill_loop(kills=3, studies=2, seed=11, work=tmp_path, slices=24, rows=256,
                           aims=("sending", "analysing", "delivering"), job_window_s=0.3)
    print(tally.figures())
    assert tally.kills == 3 and tally.node_starts == 4
    assert tally.landed["mid_send"] >= 1      # a kill cut an association of the scanner
    assert tally.landed["mid_job"] >= 1       # a kill interrupted an analysis job
    # Every acknowledged instance is in the database and decodes; every AA'd HL7 message
    # is stored and applied.
    assert len(tally.acknowledged) == 48 and tally.lost == [] and tally.unreadable == []
    assert tally.hl7_acknowledged > 0 and tally.hl7_lost == [] and tally.hl7_unapplied == []
    # Every study has its report, made once: one result, one SR and one SEG at the PACS
    # (by distinct SOP Instance UID), and they are the result's.
    assert tally.reported == 2
    assert all(n == 1 for n in tally.results_per_study.values())
    assert all(len(uids) == 1 for uids in tally.sr_per_study.values())
    assert all(len(uids) == 1 for uids in tally.seg_per_study.values())
    assert all(len(uids) <= 1 for uids in tally.key_images_per_study.values())  # no second KOS
    assert all(len(uids) <= 1 for uids in tally.key_captures_per_study.values())  # no second capture
    assert tally.result_uids_match
    # Every study raised its alert (26 ml > the 10 ml rule) through the webhook.
    assert len(tally.alerts_per_study) == 2
    # Receptions per SOP Instance UID: a UID arrives twice only when a kill fell between
    # the PACS's success and the outbox commit (the documented at-least-once edge).
    resent = {uid for uid, n in tally.receptions.items() if n > 1}
    assert resent <= tally.held_uncommitted
    realerted = {study for study, n in tally.alerts_per_study.items() if n > 1}
    assert realerted <= tally.alerts_held_uncommitted
    assert failures(tally) == []


def _store_series_and_die_when_the_job_is_queued(data_dir: Path, files: list[Path]) -> None:
    """Child process: receive a whole series; die at the moment its analysis job is queued."""

    def die(*_: object, **__: object) -> None:
        os._exit(DIED)  # no clean-up, no commit of anything still open: as kill -9

    JobRepository.enqueue = die  # type: ignore[method-assign]  # fault injection in this child only
    db = open_database(data_dir / "hemex.sqlite3")
    tracker = SeriesTracker(db, SeriesCompletionSettings(quiet_period_s=30.0))
    store = InstanceStore(db, data_dir / "spool", 0, tracker)
    for path in files:
        store.store(read_instance_header(pydicom.dcmread(path)), path.read_bytes(), "STORESCU")


def test_death_between_series_completion_and_job_insert_still_analyses(tmp_path: Path) -> None:
    """Regression: the series was marked complete in one transaction and its analysis job
    queued in the next; a death between the two left a study no restart would analyse."""
    phantom = make_head_ct_series(tmp_path / "ct", slices=4, rows=64, pixel_mm=230.0 / 64)
    data_dir = tmp_path / "data"
    child = multiprocessing.get_context("spawn").Process(
        target=_store_series_and_die_when_the_job_is_queued, args=(data_dir, phantom.paths))
    child.start()
    child.join(120)
    assert child.exitcode == DIED  # it died exactly there
    db = open_database(data_dir / "hemex.sqlite3")
    with db.reading() as repos:
        assert repos.images.instance_count() == 4
        assert repos.images.open_series() == [phantom.series_uid]  # the completion was rolled back
    tracker = SeriesTracker(db, SeriesCompletionSettings(quiet_period_s=30.0))
    assert tracker.resume_open_series() == 1  # what Node.start() does after a crash
    with db.reading() as repos:
        assert repos.jobs.state_of(JobKind.ANALYSE_STUDY, phantom.study_uid) is JobState.PENDING


def test_each_delivery_is_committed_before_the_next_object_is_sent(tmp_path: Path) -> None:
    """Regression: the outbox recorded a batch's outcomes only after the whole association
    had ended, so a kill during a batch re-sent every object the PACS had already taken
    (56 duplicate receptions in a 20-kill run of bench/kill_loop_node.py). Each success
    is now committed before the next object goes out, so a kill re-sends at most one."""
    phantom = make_head_ct_series(tmp_path / "ct", slices=4, rows=64, pixel_mm=230.0 / 64)
    db = open_database(tmp_path / "data" / "hemex.sqlite3")
    seen_delivered: list[int] = []

    def count_delivered(_: Reception) -> None:  # in the PACS, as each object arrives
        seen_delivered.append(NodeDatabase(tmp_path / "data").count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered'"))

    pacs = CountingPacs(on_store=count_delivered).start()
    try:
        destination = DicomDestination(name="pacs", ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.port)
        outbox = Outbox(db, OutboxSettings(), {"dicom": DicomStoreChannel([destination])})
        for path in phantom.paths:
            outbox.enqueue(DeliveryRequest(Channel.DICOM, "pacs", path.stem, path, phantom.study_uid))
        result = outbox.deliver_due()
    finally:
        pacs.stop()
    assert len(result.delivered) == 4 and len(pacs.receptions()) == 4  # one association, four objects
    assert seen_delivered == [0, 1, 2, 3]


def test_sigterm_right_after_start_up_stops_cleanly(tmp_path: Path) -> None:
    """Regression: `hemex serve` slept through a SIGTERM sent as soon as its DICOM port
    answered (4 of 6 tries hung until killed), or died of it before its handler was in
    place. Now a node whose port answers stops cleanly, with status 0, every time."""
    config = write_node_config(tmp_path, free_port(), "COUNTPACS")
    node = NodeProcess(config, tmp_path / "node.out")
    for _ in range(3):
        node.start()
        assert node.stop(timeout_s=30) == 0, node.output_tail()
