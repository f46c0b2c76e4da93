"""Series tracking and the study-level decision, with an injected clock: quiet periods,
slice stacks, studies with several series (scout, bone, thick and thin soft tissue), the
expected image count, and durable timers that a restarted node (or another one) finds in
the database. The images are tiny synthetic CT slices (8 x 8 pixels, not anatomy)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom

from daemon.assemble.series_tracker import SeriesTracker
from daemon.config import SeriesCompletionSettings, SeriesSelectionSettings
from daemon.receive.instance_header import read_instance_header
from daemon.receive.instance_store import InstanceStore
from domain.jobs import JobKind, JobState
from domain.study import StudyState
from tests.support.databases import open_database
from tests.support.dicom_listener import tiny_ct

# Small series stand in for real ones: 4 slices are enough to be analysable here.
SELECTION = SeriesSelectionSettings(min_slices=4)
SETTLE_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """The receive path's store and tracker on one database, with the test's clock."""

    def __init__(self, folder: Path, clock: Clock, quiet_s: float = 30.0, complete_on_release: bool = True) -> None:
        self.folder, self.clock = folder, clock
        self.db = open_database(folder / "db.sqlite3")
        settings = SeriesCompletionSettings(quiet_period_s=quiet_s, confirm_s=1.0, min_stack_slices=4,
                                            study_settle_s=SETTLE_S, complete_on_release=complete_on_release)
        self.tracker = SeriesTracker(self.db, settings, clock=clock, selection=SELECTION)
        self.store = InstanceStore(self.db, folder / "spool", 0, self.tracker, clock=clock)

    def send(self, study: str, series: str, index: int, *, thickness: float = 2.5, kernel: str = "H30s",
             image_type: str = "ORIGINAL\\PRIMARY\\AXIAL", expected: int | None = None,
             position: float | None = None) -> None:
        path = tiny_ct(self.folder / "in" / f"{series}-{index}.dcm", study, series, index)
        ds = pydicom.dcmread(path)
        ds.SliceThickness = thickness
        ds.ConvolutionKernel = kernel
        ds.ImageType = image_type
        ds.ImagePositionPatient = [0, 0, thickness * index if position is None else position]
        if expected is None:
            del ds.ImagesInAcquisition
        else:
            ds.ImagesInAcquisition = expected
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        self.store.store(read_instance_header(ds), buffer.getvalue(), "STORESCU")

    def series(self, study: str, series: str, count: int, **kwargs: object) -> None:
        for index in range(count):
            self.send(study, series, index, **kwargs)  # type: ignore[arg-type]

    def analysis_job(self, study: str) -> tuple[JobState | None, float | None]:
        with self.db.reading() as repos:
            state = repos.jobs.state_of(JobKind.ANALYSE_STUDY, study)
            due = repos.jobs.next_due_at()
        return state, due

    def state(self, study: str) -> StudyState:
        with self.db.reading() as repos:
            return repos.studies.status(study).state


def _node(tmp_path: Path, quiet_s: float = 30.0) -> Node:
    return Node(tmp_path, Clock(), quiet_s)


def test_a_usable_series_is_analysed_while_a_bone_series_is_still_arriving(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.series("1.1", "1.1.1", 6)               # soft tissue, 2.5 mm
    node.series("1.1", "1.1.2", 3, kernel="H70h")  # bone kernel, still arriving
    node.clock.now += 1.0
    node.tracker.check_due()
    assert node.analysis_job("1.1") == (JobState.PENDING, node.clock.now)
    assert node.state("1.1") is StudyState.COMPLETE


def test_the_study_waits_for_a_thinner_series_still_arriving(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.series("1.2", "1.2.1", 6, thickness=5.0)
    node.series("1.2", "1.2.2", 2, thickness=1.0)   # thinner, 2 slices in so far
    node.clock.now += 1.0
    node.tracker.check_due()  # the 5 mm series is a whole stack; the 1 mm one is not yet
    assert node.analysis_job("1.2") == (None, None)
    assert node.state("1.2") is StudyState.RECEIVED
    for index in range(2, 8):
        node.send("1.2", "1.2.2", index, thickness=1.0)
    node.clock.now += 1.0
    node.tracker.check_due()
    assert node.analysis_job("1.2")[0] is JobState.PENDING


def test_a_scout_alone_queues_nothing_to_fail_and_the_study_settles_first(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.send("1.3", "1.3.1", 0, image_type="ORIGINAL\\PRIMARY\\LOCALIZER", expected=1)
    # The scout is complete at once (its expected count); nothing can be analysed and
    # nothing is arriving: the analysis job waits until the study has settled.
    assert node.analysis_job("1.3") == (JobState.PENDING, node.clock.now + SETTLE_S)
    assert node.state("1.3") is StudyState.RECEIVED


def test_expected_count_completes_without_waiting(tmp_path: Path) -> None:
    node = _node(tmp_path, quiet_s=3600)
    node.series("2.1", "2.1.1", 4, expected=4)
    assert node.analysis_job("2.1")[0] is JobState.PENDING


def test_a_stack_with_a_gap_waits_the_quiet_period(tmp_path: Path) -> None:
    node = _node(tmp_path, quiet_s=30.0)
    for index in (0, 1, 2, 4, 5, 6):
        node.send("2.2", "2.2.1", index)
    node.clock.now += 1.0
    node.tracker.check_due()
    assert node.analysis_job("2.2") == (None, None)
    node.clock.now += 29.0
    node.tracker.check_due()
    assert node.analysis_job("2.2")[0] is JobState.PENDING


def test_an_image_after_completion_reopens_the_series(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.series("4.1", "4.1.1", 5)
    node.clock.now += 1.0
    node.tracker.check_due()
    node.send("4.1", "4.1.1", 5)
    with node.db.reading() as repos:
        assert repos.images.open_series() == ["4.1.1"]
    node.clock.now += 1.0
    assert node.tracker.check_due() == 1  # complete again: a new analysis is queued
    assert node.analysis_job("4.1")[0] is JobState.PENDING


def test_a_released_association_completes_its_whole_stack_at_once(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.series("5.1", "5.1.1", 6)
    node.tracker.association_released({"5.1.1": 6}, still_arriving=set())
    assert node.analysis_job("5.1")[0] is JobState.PENDING  # no confirm period: the clock did not move


def test_a_release_says_nothing_about_a_series_still_arriving_or_barely_sent(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.series("5.2", "5.2.1", 6)
    # Another open association still brings images of the series.
    node.tracker.association_released({"5.2.1": 6}, still_arriving={"5.2.1"})
    # One image per association (some senders do that) says nothing about the series.
    node.tracker.association_released({"5.2.1": 1}, still_arriving=set())
    assert node.analysis_job("5.2") == (None, None)
    node.clock.now += 1.0  # the confirm period still completes it
    node.tracker.check_due()
    assert node.analysis_job("5.2")[0] is JobState.PENDING


def test_complete_on_release_off_waits_the_confirm_period(tmp_path: Path) -> None:
    node = Node(tmp_path, Clock(), complete_on_release=False)
    node.series("5.3", "5.3.1", 6)
    node.tracker.association_released({"5.3.1": 6}, still_arriving=set())
    assert node.analysis_job("5.3") == (None, None)


def test_open_series_timers_survive_a_restart(tmp_path: Path) -> None:
    node = _node(tmp_path)
    for index in (0, 2):  # a gap: only the quiet period completes it
        node.send("3.1", "3.1.1", index)
    # The process "dies"; a new one opens the same database later.
    clock = node.clock
    clock.now += 31
    again = Node(tmp_path, clock)
    assert again.tracker.check_due() == 1
    assert again.analysis_job("3.1")[0] is JobState.PENDING
