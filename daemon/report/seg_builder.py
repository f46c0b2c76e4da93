"""The DICOM Segmentation (SEG) of the intraparenchymal hematoma mask, built with highdicom.

BINARY segments, frames aligned one-to-one with the source CT slices (empty slices
omitted), or with the frames of a multi-frame (Enhanced CT) source image. Segment 1 is
always the intraparenchymal hematoma; the intraventricular, extra-axial and
perilesional oedema classes follow, numbered in that order, when the masking method
separates them (``segment_classes``; the SR's groups reference the same numbers). An
empty mask still gives a valid SEG: highdicom then keeps every frame, all zero, because
a SEG cannot have no frames; the SR then reports 0 mL against it, which is a statement
("no hematoma found by this algorithm") rather than a missing result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code

from daemon.config import ReportSettings
from daemon.report import codes
from daemon.report.uids import derived_uid, new_uid, seg_series_uid
from domain.errors import ReportBuildError
from domain.imaging import HematomaMask, VolumeGeometry
from domain.redaction import mask_quoted

SEGMENT_NUMBER = 1
SEGMENT_LABEL = "Intraparenchymal hemorrhage"
MANUFACTURER_MODEL_NAME = "hemex"


@dataclass(frozen=True)
class SegmentClass:
    """One class of blood (or oedema) a masking method may label: its ``HematomaMask``
    attribute, its SEG segment label and property type, and its SR tracking identifier."""

    attribute: str
    label: str
    property_type: Code
    tracking_id: str
    tracking_key: str


HEMATOMA = SegmentClass("mask", SEGMENT_LABEL, codes.HEMORRHAGE, "Intraparenchymal hematoma",
                        "hemex-hematoma-tracking")
OTHER_CLASSES = (
    SegmentClass("intraventricular", "Intraventricular hemorrhage", codes.HEMORRHAGE,
                 "Intraventricular hemorrhage", "hemex-ivh-tracking"),
    SegmentClass("extra_axial", "Extra-axial hemorrhage", codes.HEMORRHAGE,
                 "Extra-axial hemorrhage", "hemex-eah-tracking"),
    SegmentClass("perilesional_oedema", "Perilesional oedema", codes.EDEMA,
                 "Perilesional oedema", "hemex-oedema-tracking"),
)


def segment_classes(separated: dict[str, bool]) -> list[tuple[int, SegmentClass]]:
    """The SEG's segments as (segment number, class): the hematoma first, then each other
    class for which ``separated[attribute]`` is true (the method labelled it)."""
    present = [HEMATOMA, *(c for c in OTHER_CLASSES if separated.get(c.attribute))]
    return list(enumerate(present, start=1))


def mask_segments(mask: HematomaMask) -> list[tuple[int, SegmentClass]]:
    """``segment_classes`` of the classes ``mask`` holds."""
    return segment_classes({c.attribute: getattr(mask, c.attribute) is not None for c in OTHER_CLASSES})


def tracking_uid(settings: ReportSettings, study_uid: str, segment: SegmentClass) -> str:
    """The tracking UID of one class in ``study_uid``: the same in SEG and every SR."""
    return derived_uid(settings, study_uid, segment.tracking_key)

def algorithm_family(mask: HematomaMask) -> Code:
    """The CID 7162 algorithm family of the method that made ``mask``."""
    return codes.FAMILY_ARTIFICIAL_INTELLIGENCE if mask.learned else codes.FAMILY_MORPHOLOGICAL_OPERATIONS


def order_source_images(source_images: Sequence[Dataset], volume: VolumeGeometry) -> list[Dataset]:
    """The source images in the volume's slice order (``volume.sop_instance_uids``).

    Images outside the volume are ignored; header-only datasets (no Pixel Data) suffice.

    Raises
    ------
    ReportBuildError
        When a slice of the volume has no source image, or sizes or series disagree.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source_images}
    missing = [uid for uid in volume.sop_instance_uids if uid not in by_uid]
    if missing:
        raise ReportBuildError(
            f"{len(missing)} of {len(volume.sop_instance_uids)} slices of the volume have no"
            " source image; the SEG frames cannot be aligned"
        )
    ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
    rows, columns = volume.shape[1:]
    for ds in ordered:
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise ReportBuildError(
                f"source image is {ds.Rows}x{ds.Columns}, the volume {rows}x{columns}"
            )
        if str(ds.SeriesInstanceUID) != volume.series_instance_uid:
            raise ReportBuildError("a source image belongs to another series than the volume")
    return ordered


def build_segmentation(
    source_images: Sequence[Dataset],
    volume: VolumeGeometry,
    mask: HematomaMask,
    settings: ReportSettings,
    software_version: str,
) -> hd.seg.Segmentation:
    """Build the SEG of ``mask`` on the CT series behind ``volume``.

    Parameters
    ----------
    source_images:
        The CT images of the series, any order; header-only datasets are enough.
    volume:
        The geometry of the volume the mask was computed on; its ``sop_instance_uids`` fix the frame order.
    mask:
        The hematoma mask (boolean, the volume's shape); its method name and version go
        into the segment's Algorithm Identification.
    settings:
        UID root, series number, manufacturer, institution.
    software_version:
        The node's version, written to Software Versions.

    Returns
    -------
    highdicom.seg.Segmentation
        A BINARY SEG with one segment, "Intraparenchymal hemorrhage".

    Raises
    ------
    ReportBuildError
        When the mask does not fit the volume, source images are missing, or highdicom
        refuses to build the object (the message says why).
    """
    if mask.mask.shape != volume.shape:
        raise ReportBuildError(f"mask shape {mask.mask.shape} differs from volume shape {volume.shape}")
    segments = mask_segments(mask)
    sources, pixel_array = _sources_and_frames(source_images, volume, mask, segments)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=mask.method_name, family=algorithm_family(mask), version=mask.method_version)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.label,
            segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            segmented_property_type=segment.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_id=segment.tracking_id,
            tracking_uid=tracking_uid(settings, volume.study_instance_uid, segment),
            anatomic_regions=[codes.BRAIN],
        )
        for number, segment in segments
    ]
    # An empty segment with empty frames omitted would have no frame at all.
    every_segment_found = all(pixel_array[..., i].any() for i in range(pixel_array.shape[-1]))
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=seg_series_uid(settings, volume.study_instance_uid),
            series_number=settings.seg_series_number,
            sop_instance_uid=new_uid(settings),
            instance_number=1,
            manufacturer=settings.manufacturer,
            manufacturer_model_name=MANUFACTURER_MODEL_NAME,
            software_versions=software_version,
            device_serial_number=settings.station_name,
            institution_name=settings.institution_name or None,
            series_description="hemex hematoma segmentation",
            content_label="HEMATOMA",
            content_description=f"{', '.join(d.SegmentLabel for d in descriptions)};"
                                f" {mask.method_name} {mask.method_version}"[:64],
            # An empty mask keeps all (empty) frames: a SEG needs at least one frame.
            omit_empty_frames=every_segment_found,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ReportBuildError(f"highdicom refused the SEG: {mask_quoted(str(exc))}") from exc


def _sources_and_frames(source_images: Sequence[Dataset], volume: VolumeGeometry, mask: HematomaMask,
                        segments: list[tuple[int, SegmentClass]]) -> tuple[list[Dataset], np.ndarray]:
    """The SEG's source images and its frames in their order, one channel per segment.

    Single-frame CT: the images in the volume's slice order, one frame per slice. A
    multi-frame source (Enhanced CT): that one image, the mask's slices put back in the
    image's own frame order (``volume.source_frames``).
    """
    stacked = np.stack([getattr(mask, segment.attribute) for _, segment in segments], axis=-1).astype(np.uint8)
    uids = set(volume.sop_instance_uids)
    if len(uids) == 1 and volume.source_frames and len(volume.sop_instance_uids) > 1:
        uid = next(iter(uids))
        matching = [ds for ds in source_images if str(ds.SOPInstanceUID) == uid]
        if not matching:
            raise ReportBuildError("the multi-frame source image of the volume is missing")
        frames = np.zeros((int(matching[0].NumberOfFrames), *stacked.shape[1:]), np.uint8)
        frames[np.asarray(volume.source_frames) - 1] = stacked
        return matching[:1], frames
    return order_source_images(source_images, volume), np.ascontiguousarray(stacked)


def hematoma_tracking_uid(settings: ReportSettings, study_uid: str) -> str:
    """The tracking UID of the hematoma in ``study_uid``: the same in SEG and every SR."""
    return tracking_uid(settings, study_uid, HEMATOMA)
