"""Choose the one series of a study to analyse: axial non-contrast soft-tissue head CT,
thinnest slices. Rules are data (SeriesSelectionSettings); every skipped series gets an
explicit reason, which is logged and kept with the study.

``decide_study`` takes the study-level decision when one of its series completes:
analyse now, wait for a better series still being received, or nothing usable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from daemon.config import SeriesSelectionSettings
from domain.study import CT_STORAGE_SOP_CLASSES, SeriesSelection, SkippedSeries


@dataclass(frozen=True)
class SeriesCandidate:
    """A complete series as seen by the selector (header of one image + image count)."""

    series_uid: str
    image_count: int
    header: Dataset

    @property
    def slice_count(self) -> int:
        frames = int(self.header.get("NumberOfFrames", 1) or 1)
        return self.image_count * frames


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _axial_tilt_deg(ds: Dataset) -> float | None:
    orientation = ds.get("ImageOrientationPatient")
    if orientation is None and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "PlaneOrientationSequence" in shared:
            orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    if orientation is None or len(orientation) != 6:
        return None
    row, col = [float(v) for v in orientation[:3]], [float(v) for v in orientation[3:]]
    normal = (row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2], row[0] * col[1] - row[1] * col[0])
    length = math.sqrt(sum(v * v for v in normal)) or 1.0
    return math.degrees(math.acos(min(1.0, abs(normal[2]) / length)))


def rejection_reason(candidate: SeriesCandidate, rules: SeriesSelectionSettings,
                     receiving: bool = False) -> str | None:
    """Why this series cannot be analysed, or None when it can.

    ``receiving``: the series is still arriving, so its slice count is not judged yet.
    """
    ds = candidate.header
    modality = _text(ds, "Modality")
    if modality not in rules.modalities:
        return f"modality {modality or 'missing'} is not {'/'.join(rules.modalities)}"
    if str(ds.get("SOPClassUID", "")) not in CT_STORAGE_SOP_CLASSES:
        return "not a CT image storage SOP class"
    image_type = _text(ds, "ImageType").upper()
    if "LOCALIZER" in image_type:
        return "localizer (scout) images"
    body_part = _text(ds, "BodyPartExamined").upper()
    if body_part and rules.body_parts and body_part not in rules.body_parts:
        return f"body part {body_part} is not a head"
    if _text(ds, "ContrastBolusAgent").strip():
        return "contrast-enhanced (Contrast/Bolus Agent present)"
    kernel = _text(ds, "ConvolutionKernel")
    for pattern in rules.excluded_kernel_patterns:
        if re.search(pattern, kernel, flags=re.IGNORECASE):
            return f"reconstruction kernel {kernel!r} is not soft tissue (matches {pattern!r})"
    description = _text(ds, "SeriesDescription")
    for pattern in rules.excluded_description_patterns:
        if re.search(pattern, description, flags=re.IGNORECASE):
            return f"series description matches excluded pattern {pattern!r}"
    tilt = _axial_tilt_deg(ds)
    if tilt is None:
        return "no image orientation"
    if tilt > rules.max_axial_tilt_deg:
        return f"not axial: image plane {tilt:.0f} degrees from axial"
    if not receiving and candidate.slice_count < rules.min_slices:
        return f"{candidate.slice_count} slices, fewer than {rules.min_slices}"
    thickness = _slice_thickness(ds)
    if thickness is not None and thickness > rules.max_slice_thickness_mm:
        return f"slice thickness {thickness:g} mm above {rules.max_slice_thickness_mm:g} mm"
    return None


def _slice_thickness(ds: Dataset) -> float | None:
    value = ds.get("SliceThickness")
    if value in (None, "") and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared:
            value = shared.PixelMeasuresSequence[0].get("SliceThickness")
    return float(value) if value not in (None, "") else None


def preference(candidate: SeriesCandidate) -> tuple[float, int]:
    """Sort key of eligible series: thinnest slices first, then most slices."""
    return (_slice_thickness(candidate.header) or 99.0, -candidate.slice_count)


StudyAction = Literal["analyse", "wait", "nothing_usable"]


@dataclass(frozen=True)
class StudyDecision:
    """What to do with a study now that one of its series is complete.

    ``analyse``: its best complete series is ``series_uid``, and no series still being
    received would be preferred to it. ``wait``: a series still being received could be
    analysed and would be preferred (or is the only hope). ``nothing_usable``: no series
    can be analysed and none is being received.
    """

    action: StudyAction
    series_uid: str | None
    reason: str


def decide_study(complete: Sequence[SeriesCandidate], receiving: Sequence[SeriesCandidate],
                 rules: SeriesSelectionSettings) -> StudyDecision:
    """Analyse now, wait for a series on its way, or nothing usable (see StudyDecision)."""
    selection = select_series(complete, rules)
    hopeful = sorted((c for c in receiving if rejection_reason(c, rules, receiving=True) is None), key=preference)
    if selection.chosen_series_uid is None:
        if hopeful:
            return StudyDecision("wait", None, "no complete series can be analysed yet; one is still arriving")
        return StudyDecision("nothing_usable", None, "no series meets the selection rules: " + selection.reasons)
    chosen = next(c for c in complete if c.series_uid == selection.chosen_series_uid)
    best_thickness = preference(chosen)[0]
    if hopeful and preference(hopeful[0])[0] < best_thickness:
        return StudyDecision("wait", selection.chosen_series_uid,
                             f"a thinner series is still arriving ({preference(hopeful[0])[0]:g} mm"
                             f" against {best_thickness:g} mm)")
    return StudyDecision("analyse", selection.chosen_series_uid, "best complete series")


def select_series(candidates: Sequence[SeriesCandidate], rules: SeriesSelectionSettings) -> SeriesSelection:
    """Pick the thinnest eligible series (ties: most slices); explain every other one."""
    eligible: list[SeriesCandidate] = []
    skipped: list[SkippedSeries] = []
    for candidate in candidates:
        reason = rejection_reason(candidate, rules)
        if reason is None:
            eligible.append(candidate)
        else:
            skipped.append(SkippedSeries(candidate.series_uid, reason))
    if not eligible:
        return SeriesSelection(None, tuple(skipped))
    eligible.sort(key=preference)
    chosen = eligible[0]
    for other in eligible[1:]:
        skipped.append(SkippedSeries(other.series_uid, (
            f"thicker or fewer slices than the chosen series "
            f"({_slice_thickness(other.header)} mm, {other.slice_count} slices)")))
    return SeriesSelection(chosen.series_uid, tuple(skipped))
