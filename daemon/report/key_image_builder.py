"""The Key Object Selection (KOS) that flags the CT slice where the hematoma is largest.

Many PACS viewers do not draw a SEG, but nearly all show key images: this document
("Of Interest", DCM 113000) points the reader at that slice, with a description that
names the measured volume and the algorithm. It references images only; the values
themselves are in the SR.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from daemon.config import ReportSettings
from daemon.report.sr_builder import device_observer
from daemon.report.uids import derived_uid, new_uid
from domain.analysis import StudyAnalysis
from domain.errors import ReportBuildError
from domain.imaging import HematomaMask, VolumeGeometry
from domain.redaction import mask_quoted


def key_image_series_uid(settings: ReportSettings, study_uid: str) -> str:
    """The key-image series of ``study_uid`` (every KOS of the study shares it)."""
    return derived_uid(settings, study_uid, "hemex-kos-series")


def largest_area_slice(mask: HematomaMask) -> int | None:
    """Index of the slice with the most hematoma voxels, or None for an empty mask."""
    areas = mask.mask.sum(axis=(1, 2))
    return int(np.argmax(areas)) if areas.any() else None


def build_key_images(analysis: StudyAnalysis, source_images: Sequence[Dataset], volume: VolumeGeometry,
                     mask: HematomaMask, settings: ReportSettings) -> hd.ko.KeyObjectSelectionDocument | None:
    """The KOS of ``analysis``, or None when no hematoma was found (nothing to point at).

    Raises
    ------
    ReportBuildError
        When the slice's source image is missing or highdicom refuses the document.
    """
    index = largest_area_slice(mask)
    if index is None:
        return None
    uid = volume.sop_instance_uids[index]
    image = next((ds for ds in source_images if str(ds.SOPInstanceUID) == uid), None)
    if image is None:
        raise ReportBuildError("the key image's source CT slice is missing")
    m = analysis.measurements
    description = (f"Largest hematoma slice: {m.volume_ml:.1f} mL intraparenchymal hemorrhage"
                   f" by {m.method_name} {m.method_version}, automated and unverified")
    try:
        content = hd.ko.KeyObjectSelection(
            document_title=dcm_codes.DCM.OfInterest,
            referenced_objects=[image],
            observer_device_context=device_observer(settings),
            description=description,
        )
        return hd.ko.KeyObjectSelectionDocument(
            evidence=[image],
            content=content,
            series_instance_uid=key_image_series_uid(settings, analysis.identity.study_uid),
            series_number=settings.kos_series_number,
            sop_instance_uid=new_uid(settings),
            instance_number=1,
            manufacturer=settings.manufacturer,
            institution_name=settings.institution_name or None,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ReportBuildError(f"highdicom refused the key object selection: {mask_quoted(str(exc))}") from exc
