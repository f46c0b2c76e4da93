"""The DICOM Segmentation (SEG) of the intraparenchymal hematoma mask, built with highdicom.

One BINARY segment, frames aligned one-to-one with the source CT slices (empty slices
omitted), or with the frames of a multi-frame (Enhanced CT) source image. An empty
mask still gives a valid SEG: highdicom then keeps every frame, all zero, because a SEG
cannot have no frames; the SR then reports 0 mL against it, which is a statement ("no
hematoma found by this algorithm") rather than a missing result.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    sources, pixel_array = _sources_and_frames(source_images, volume, mask)
    description = hd.seg.SegmentDescription(
        segment_number=SEGMENT_NUMBER,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=codes.HEMORRHAGE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=mask.method_name,
            family=algorithm_family(mask),
            version=mask.method_version,
        ),
        tracking_id="Intraparenchymal hematoma",
        tracking_uid=hematoma_tracking_uid(settings, volume.study_instance_uid),
        anatomic_regions=[codes.BRAIN],
    )
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
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
            content_description=f"Intraparenchymal hemorrhage, {mask.method_name} {mask.method_version}",
            # An empty mask keeps all (empty) frames: a SEG needs at least one frame.
            omit_empty_frames=bool(mask.mask.any()),
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ReportBuildError(f"highdicom refused the SEG: {mask_quoted(str(exc))}") from exc


def _sources_and_frames(source_images: Sequence[Dataset], volume: VolumeGeometry,
                        mask: HematomaMask) -> tuple[list[Dataset], np.ndarray]:
    """The SEG's source images and its frames in their order.

    Single-frame CT: the images in the volume's slice order, one frame per slice. A
    multi-frame source (Enhanced CT): that one image, the mask's slices put back in the
    image's own frame order (``volume.source_frames``).
    """
    uids = set(volume.sop_instance_uids)
    if len(uids) == 1 and volume.source_frames and len(volume.sop_instance_uids) > 1:
        uid = next(iter(uids))
        matching = [ds for ds in source_images if str(ds.SOPInstanceUID) == uid]
        if not matching:
            raise ReportBuildError("the multi-frame source image of the volume is missing")
        frames = np.zeros((int(matching[0].NumberOfFrames), *mask.mask.shape[1:]), np.uint8)
        frames[np.asarray(volume.source_frames) - 1] = mask.mask
        return matching[:1], frames
    return order_source_images(source_images, volume), np.ascontiguousarray(mask.mask, dtype=np.uint8)


def hematoma_tracking_uid(settings: ReportSettings, study_uid: str) -> str:
    """The tracking UID of the hematoma in ``study_uid``: the same in SEG and every SR."""
    return derived_uid(settings, study_uid, "hemex-hematoma-tracking")
