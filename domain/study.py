"""A study as the node follows it: who it is about, what was received, and its lifecycle.

The lifecycle is an explicit state machine. Every stage reports what happened as an
event; ``next_state`` says where that leaves the study. Events that do not apply to the
current state leave it unchanged (a report dispatched while new images are arriving
keeps the study ``received``: the next analysis is already due).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# The CT image storage SOP classes the node receives and analyses: CT Image, Enhanced CT
# Image and Legacy Converted Enhanced CT Image Storage.
CT_STORAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2",
})


class StudyState(str, enum.Enum):
    """Where a study stands. ``failed`` and ``no_series`` carry a reason."""

    RECEIVED = "received"        # images arriving; no analysis queued yet
    COMPLETE = "complete"        # a series to analyse is complete, its analysis queued
    ANALYSING = "analysing"      # an analysis or report job is working on it
    REPORTED = "reported"        # a preliminary report went out (clinical data awaited)
    FINAL = "final"              # the final report went out
    FAILED = "failed"            # it could not be analysed (reason kept; notice sent)
    NO_SERIES = "no_series"      # no series meets the selection rules (reasons kept; notice sent)


class StudyEvent(str, enum.Enum):
    """What a stage reports about a study."""

    IMAGES_ARRIVED = "images_arrived"
    ANALYSIS_QUEUED = "analysis_queued"
    ANALYSIS_STARTED = "analysis_started"
    PRELIMINARY_DISPATCHED = "preliminary_dispatched"
    FINAL_DISPATCHED = "final_dispatched"
    NO_SERIES = "no_series"
    FAILED = "failed"


S, E = StudyState, StudyEvent
# A reported study stays reported while more images arrive: its report stands until a
# corrected one (from a better series) goes out. A study that could not be analysed is
# hopeful again when new images arrive.
TRANSITIONS: dict[StudyEvent, dict[StudyState, StudyState]] = {
    E.IMAGES_ARRIVED: {S.NO_SERIES: S.RECEIVED, S.FAILED: S.RECEIVED},
    E.ANALYSIS_QUEUED: {S.RECEIVED: S.COMPLETE, S.NO_SERIES: S.COMPLETE, S.FAILED: S.COMPLETE},
    E.ANALYSIS_STARTED: {state: S.ANALYSING for state in S},
    E.PRELIMINARY_DISPATCHED: {S.ANALYSING: S.REPORTED, S.COMPLETE: S.REPORTED, S.RECEIVED: S.REPORTED},
    E.FINAL_DISPATCHED: {S.ANALYSING: S.FINAL, S.COMPLETE: S.FINAL, S.REPORTED: S.FINAL, S.RECEIVED: S.FINAL},
    E.NO_SERIES: {S.ANALYSING: S.NO_SERIES, S.COMPLETE: S.NO_SERIES, S.RECEIVED: S.NO_SERIES},
    E.FAILED: {state: S.FAILED for state in S if state not in (S.REPORTED, S.FINAL)},
}
del S, E


def next_state(current: StudyState, event: StudyEvent) -> StudyState:
    """The state ``event`` leads to from ``current`` (``current`` when it does not apply)."""
    return TRANSITIONS[event].get(current, current)


def is_valid_uid(value: str) -> bool:
    """A DICOM UID: dotted digits, at most 64 characters."""
    return 0 < len(value) <= 64 and bool(_UID.match(value))


@dataclass(frozen=True)
class StudyIdentity:
    """Who and what a result is about. PHI: never logged; only ``handle`` is."""

    study_uid: str
    handle: str
    patient_id: str | None
    issuer_of_patient_id: str | None
    accession_number: str | None
    patient_name: str | None
    study_datetime: str | None


@dataclass(frozen=True)
class StudyStatus:
    """A study's place in its lifecycle, as ``hemex status`` and the metrics show it."""

    identity: StudyIdentity
    state: StudyState
    reason: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ReceivedInstance:
    """The attributes of a received instance that the node indexes (checked UIDs)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    modality: str
    series_description: str
    patient_id: str | None
    issuer_of_patient_id: str | None
    accession_number: str | None
    study_datetime: str | None
    expected_images: int | None
    # mm along the normal of the image plane (None: no usable position, or multi-frame)
    slice_position: float | None = None

    def __post_init__(self) -> None:
        for name in ("sop_instance_uid", "sop_class_uid", "study_uid", "series_uid"):
            if not is_valid_uid(getattr(self, name)):
                raise ValueError(f"{name} is not a valid UID")


@dataclass(frozen=True)
class SeriesProgress:
    """How far the reception of one series has come."""

    series_uid: str
    study_uid: str
    instance_count: int
    expected_images: int | None
    last_received_at: float


@dataclass(frozen=True)
class SkippedSeries:
    """A series the selection rules did not choose, and why."""

    series_uid: str
    reason: str


@dataclass(frozen=True)
class SeriesSelection:
    """Which series of a study is analysed, and why each other one is not."""

    chosen_series_uid: str | None
    skipped: tuple[SkippedSeries, ...]

    @property
    def reasons(self) -> str:
        """The skipped series' reasons in one line (no PHI: rule names and values)."""
        return "; ".join(s.reason for s in self.skipped)
