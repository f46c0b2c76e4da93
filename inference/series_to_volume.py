"""Stage 3: a HU volume with its patient geometry, from the DICOM images of one series.

Slices are sorted by Image Position (Patient) projected on the slice normal (row x column
direction cosines), never by Instance Number or file order. The geometry is checked
before a voxel is trusted: one orientation, unit and orthogonal direction cosines, one
pixel spacing and matrix size, evenly spaced along the normal (no missing or duplicated
slices), positions on one straight line. Rescale slope and intercept are applied per
slice. Both CT Image Storage (one slice per instance) and multi-frame Enhanced CT (one
slice per frame, geometry in the functional groups) are read.

A gantry-tilted series (slices stacked off the normal, as routine head CT protocols
acquire them to spare the lenses) is kept as acquired: its affine's slice column is the
real step, so it is sheared, each slice stays one source image, and the voxel volume is
pixel area x the gap between planes (inference/gantry_tilt.py). Only a tilt beyond
``GeometryLimits.max_gantry_tilt_deg`` or one that changes within the series is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from domain.errors import UnsupportedSeriesError
from domain.imaging import CTVolume
from inference.gantry_tilt import grid_spacing_mm
from inference.parameters import GeometryLimits

_UNIT_TOLERANCE = 1e-3       # |direction cosine| must be 1 within this
_ORTHOGONAL_TOLERANCE = 1e-3  # row . column must be 0 within this
_SAME_ORIENTATION_TOLERANCE = 1e-3
_SAME_SPACING_TOLERANCE = 1e-3  # mm


@dataclass(frozen=True)
class _Slice:
    """One 2-D image of the series: where it is and how to read its pixels."""

    dataset: Dataset
    frame_index: int | None  # None for a single-frame image
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def volume_from_datasets(datasets: Sequence[Dataset], settings: GeometryLimits | None = None) -> CTVolume:
    """Build the HU volume of one series.

    Parameters
    ----------
    datasets:
        Every image of the series (any order), with pixel data.
    settings:
        Geometry tolerances; the defaults of ``GeometryLimits`` when None.

    Returns
    -------
    CTVolume
        float32 HU, slice 0 lowest along the slice normal, with its LPS affine (sheared
        for a tilted series).

    Raises
    ------
    UnsupportedSeriesError
        A tilt beyond the limit, inconsistent or incomplete geometry, or pixels that
        cannot be decoded; the message says which.
    """
    settings = settings or GeometryLimits()
    if not datasets:
        raise UnsupportedSeriesError("the series has no images")
    slices = [s for ds in datasets for s in _slices_of(ds)]
    if len(slices) < 2:
        raise UnsupportedSeriesError("a volume needs at least two slices")
    _check_same_plane_geometry(slices)
    row_cosine, column_cosine = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    slices.sort(key=lambda s: float(np.dot(s.position, normal)))
    row_spacing, column_spacing = slices[0].pixel_spacing
    step = _slice_step(slices, normal, min(row_spacing, column_spacing), settings)
    hu = _stack_hu(slices)
    affine = np.eye(4)
    affine[:3, 0] = step                           # slice index
    affine[:3, 1] = column_cosine * row_spacing    # row index moves down a column
    affine[:3, 2] = row_cosine * column_spacing    # column index moves along a row
    affine[:3, 3] = slices[0].position
    first = slices[0].dataset
    return CTVolume(
        hu=hu,
        affine_lps=affine,
        spacing_mm=grid_spacing_mm(affine),
        sop_instance_uids=tuple(s.sop_instance_uid for s in slices),
        series_instance_uid=str(first.SeriesInstanceUID),
        study_instance_uid=str(first.StudyInstanceUID),
        source_frames=tuple(1 if s.frame_index is None else s.frame_index + 1 for s in slices),
        slice_thickness_mm=_positive_number(first, "SliceThickness"),
        kvp=_positive_number(first, "KVP"),
    )


def _positive_number(ds: Dataset, keyword: str) -> float | None:
    """A stated positive number (Slice Thickness, KVP), or None when absent or unusable.

    Enhanced CT states both in functional group sequences; they are then left unknown.
    """
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def slice_hu(ds: Dataset, frame_number: int = 1) -> np.ndarray:
    """float32 HU of one slice of one image: the image itself, or frame ``frame_number``
    (1-based) of a multi-frame image, rescaled as ``volume_from_datasets`` rescales it.

    Raises
    ------
    UnsupportedSeriesError
        No such frame, or pixels that cannot be decoded.
    """
    slices = _slices_of(ds)
    if not 1 <= frame_number <= len(slices):
        raise UnsupportedSeriesError(f"frame {frame_number} of a {len(slices)}-frame image")
    return _stack_hu([slices[frame_number - 1]])[0]


def _slices_of(ds: Dataset) -> list[_Slice]:
    """The slices of one instance: itself, or each frame of a multi-frame image."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        if frames != 1:
            raise UnsupportedSeriesError(f"{frames}-frame image without per-frame functional groups")
        return [_Slice(ds, None, _vector(ds, "ImagePositionPatient", 3), _vector(ds, "ImageOrientationPatient", 6),
                       _spacing(ds), *_rescale(ds))]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != frames:
        raise UnsupportedSeriesError(f"{len(per_frame)} per-frame groups for {frames} frames")
    result = []
    for index, groups in enumerate(per_frame):
        def group(name: str, frame: Dataset = groups) -> Dataset | None:
            """The frame's own functional group, else the shared one, else None."""
            for source in (frame, shared):
                if name in source and len(source[name].value):
                    return source[name].value[0]
            return None

        plane_position = group("PlanePositionSequence")
        plane_orientation = group("PlaneOrientationSequence")
        pixel_measures = group("PixelMeasuresSequence")
        if plane_position is None or plane_orientation is None or pixel_measures is None:
            raise UnsupportedSeriesError(f"frame {index + 1} lacks plane position, orientation or pixel measures")
        result.append(_Slice(
            ds, index,
            _vector(plane_position, "ImagePositionPatient", 3),
            _vector(plane_orientation, "ImageOrientationPatient", 6),
            _spacing(pixel_measures),
            *_rescale(group("PixelValueTransformationSequence") or ds),
        ))
    return result


def _vector(ds: Dataset, keyword: str, length: int) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != length:
        raise UnsupportedSeriesError(f"missing or malformed {keyword}")
    vector = np.array([float(v) for v in value], dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        raise UnsupportedSeriesError(f"{keyword} is not finite")
    return vector


def _spacing(ds: Dataset) -> tuple[float, float]:
    spacing = _vector(ds, "PixelSpacing", 2)
    if np.any(spacing <= 0) or np.any(spacing > 10):
        raise UnsupportedSeriesError(f"implausible Pixel Spacing {spacing.tolist()} mm")
    return float(spacing[0]), float(spacing[1])


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise UnsupportedSeriesError(f"unusable rescale slope {slope} / intercept {intercept}")
    return slope, intercept


def _check_same_plane_geometry(slices: list[_Slice]) -> None:
    """One orientation (unit, orthogonal cosines), one pixel spacing and one matrix size."""
    reference = slices[0]
    row, column = reference.orientation[:3], reference.orientation[3:]
    if abs(np.linalg.norm(row) - 1) > _UNIT_TOLERANCE or abs(np.linalg.norm(column) - 1) > _UNIT_TOLERANCE:
        raise UnsupportedSeriesError("Image Orientation (Patient) direction cosines are not unit vectors")
    if abs(float(np.dot(row, column))) > _ORTHOGONAL_TOLERANCE:
        raise UnsupportedSeriesError("Image Orientation (Patient) row and column are not orthogonal")
    size = (int(reference.dataset.Rows), int(reference.dataset.Columns))
    for other in slices[1:]:
        if np.max(np.abs(other.orientation - reference.orientation)) > _SAME_ORIENTATION_TOLERANCE:
            raise UnsupportedSeriesError("slices have different orientations")
        if max(abs(a - b) for a, b in zip(other.pixel_spacing, reference.pixel_spacing)) > _SAME_SPACING_TOLERANCE:
            raise UnsupportedSeriesError("slices have different pixel spacings")
        if (int(other.dataset.Rows), int(other.dataset.Columns)) != size:
            raise UnsupportedSeriesError("slices have different matrix sizes")


def _slice_step(slices: list[_Slice], normal: np.ndarray, pixel_mm: float,
                settings: GeometryLimits) -> np.ndarray:
    """The mean displacement from one slice to the next; checks even spacing, one
    straight line of positions and a correctable tilt."""
    positions = np.stack([s.position for s in slices])
    gaps = np.diff(positions @ normal)
    median_gap = float(np.median(gaps))
    if median_gap < 1e-3:
        raise UnsupportedSeriesError("slices share one position: duplicated slices or no slice spacing")
    if np.any(gaps < 1e-3):
        raise UnsupportedSeriesError(f"{int(np.sum(gaps < 1e-3))} slice position(s) repeated "
                                     "(several acquisitions in one series)")
    deviation = np.abs(gaps - median_gap) / median_gap
    if np.any(deviation > settings.slice_spacing_tolerance):
        worst = int(np.argmax(deviation))
        raise UnsupportedSeriesError(
            f"uneven slice spacing: gap {gaps[worst]:.3f} mm after slice {worst + 1}, median "
            f"{median_gap:.3f} mm (missing slices or mixed reconstructions)")
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    # A constant tilt keeps every position on the line first + k x step; a tilt or table
    # step that changes within the series does not, and no single shear corrects it.
    off_line = positions - (positions[0] + np.arange(len(slices))[:, None] * step)
    drift = float(np.max(np.linalg.norm(off_line, axis=1)))
    if drift > pixel_mm / 2:
        raise UnsupportedSeriesError(
            f"slice positions leave a straight line by {drift:.2f} mm (over half a pixel): the "
            "gantry tilt or table step changes within the series, which no single correction undoes")
    cos_tilt = min(1.0, float(np.dot(step, normal)) / float(np.linalg.norm(step)))
    tilt = math.degrees(math.acos(cos_tilt))
    if tilt > settings.max_gantry_tilt_deg:
        raise UnsupportedSeriesError(
            f"gantry tilt: slices stacked {tilt:.1f} degrees off the slice normal, beyond the "
            f"{settings.max_gantry_tilt_deg:g} degrees corrected; resample on the scanner or "
            "send an untilted series")
    return step


def _stack_hu(slices: list[_Slice]) -> np.ndarray:
    """float32 HU, (slices, rows, columns); each instance's pixels decoded once.

    ``pixel_array(ds)`` rather than ``ds.pixel_array``: the latter caches the decoded
    array on the dataset, doubling the memory a 300-slice series holds.
    """
    first = slices[0].dataset
    hu = np.empty((len(slices), int(first.Rows), int(first.Columns)), dtype=np.float32)
    decoded: dict[int, np.ndarray] = {}
    for index, s in enumerate(slices):
        key = id(s.dataset)
        if key not in decoded:
            try:
                decoded[key] = pixel_array(s.dataset)
            except (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError) as exc:
                raise UnsupportedSeriesError(f"pixel data cannot be decoded: {exc}") from exc
        pixels = decoded[key] if s.frame_index is None else decoded[key][s.frame_index]
        if pixels.shape != hu.shape[1:]:
            raise UnsupportedSeriesError(f"pixel array {pixels.shape} does not match Rows x Columns")
        np.multiply(pixels, s.slope, out=hu[index], casting="unsafe")
        hu[index] += s.intercept
        if s.frame_index is None:
            del decoded[key]  # single-frame: release the decoded pixels at once
    return hu
