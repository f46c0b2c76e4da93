"""Choose the one series of a study to analyse: axial non-contrast soft-tissue head CT,
thinnest slices. Rules are data (SeriesSelectionSettings); every skipped series gets an
explicit reason, which is logged and kept with the study."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

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


def rejection_reason(candidate: SeriesCandidate, rules: SeriesSelectionSettings) -> str | None:
    """Why this series cannot be analysed, or None when it can."""
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
    if candidate.slice_count < rules.min_slices:
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
    eligible.sort(key=lambda c: (_slice_thickness(c.header) or 99.0, -c.slice_count))
    chosen = eligible[0]
    for other in eligible[1:]:
        skipped.append(SkippedSeries(other.series_uid, (
            f"thicker or fewer slices than the chosen series "
            f"({_slice_thickness(other.header)} mm, {other.slice_count} slices)")))
    return SeriesSelection(chosen.series_uid, tuple(skipped))
