"""The key image as a DICOM Secondary Capture (highdicom ``SCImage``) that every viewer shows.

Its pixels are ``key_image_picture.render_key_image``'s picture: the slice where the
hematoma is largest, the mask's outline and the key figures burned in under a "not for
diagnosis" banner. Patient and study attributes come from the CT slice (it lands in the
same study in PACS); Burned In Annotation says YES and Source Image Sequence names the
slice (and frame) it was made from.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from daemon.config import ReportSettings
from daemon.report.uids import derived_uid, new_uid
from domain.analysis import StudyAnalysis
from domain.errors import ReportBuildError
from domain.redaction import mask_quoted

SERIES_DESCRIPTION = "hemex key image - NOT FOR DIAGNOSIS"


def key_capture_series_uid(settings: ReportSettings, study_uid: str) -> str:
    """The key-image capture series of ``study_uid`` (preliminary and final share it)."""
    return derived_uid(settings, study_uid, "hemex-key-capture-series")


def patient_orientation(source_image: Dataset, frame_number: int = 1) -> tuple[str, str]:
    """Patient Orientation (row direction, column direction) of a slice, e.g. ("L", "P").

    The orientation is the image's own, or for a multi-frame image that of frame
    ``frame_number`` (its per-frame or shared Plane Orientation).

    Raises
    ------
    ReportBuildError
        The slice has no usable Image Orientation (Patient).
    """
    values = source_image.get("ImageOrientationPatient")
    if values is None:
        for groups_name, index in (("PerFrameFunctionalGroupsSequence", frame_number - 1),
                                   ("SharedFunctionalGroupsSequence", 0)):
            groups = source_image.get(groups_name)
            if groups is not None and 0 <= index < len(groups) and "PlaneOrientationSequence" in groups[index]:
                values = groups[index].PlaneOrientationSequence[0].get("ImageOrientationPatient")
                break
    if values is None or len(values) != 6:
        raise ReportBuildError("the key slice has no Image Orientation (Patient)")
    cosines = np.asarray([float(v) for v in values], dtype=float)
    return _direction_letters(cosines[:3]), _direction_letters(cosines[3:])


def _direction_letters(vector: np.ndarray) -> str:
    """DICOM patient direction letters of an LPS unit vector, strongest component first."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    order = np.argsort(-np.abs(vector))
    word = "".join(letters[axis][0 if vector[axis] > 0 else 1] for axis in order if abs(vector[axis]) > 0.25)
    return word or "L"


def build_key_image_capture(picture: np.ndarray, source_image: Dataset, analysis: StudyAnalysis,
                            settings: ReportSettings, *, instance_number: int, frame_number: int | None = None,
                            orientation: tuple[str, str]) -> hd.sc.SCImage:
    """The Secondary Capture of ``picture`` (RGB uint8) in the study of ``source_image``.

    Parameters
    ----------
    picture
        The rendered key image.
    source_image
        The CT image of the key slice (header suffices).
    analysis
        The analysis the figures come from (software version, study).
    settings
        UID root, series number, manufacturer, institution.
    instance_number
        The capture's Instance Number in its series (the report's, as for the SR).
    frame_number
        The frame of a multi-frame source image (None for a single-frame CT image).
    orientation
        Patient Orientation of the picture's rows and columns (``patient_orientation``).

    Raises
    ------
    ReportBuildError
        When highdicom refuses the object (the message says why).
    """
    try:
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source_image,
            pixel_array=np.ascontiguousarray(picture, dtype=np.uint8),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=key_capture_series_uid(settings, analysis.identity.study_uid),
            series_number=settings.key_capture_series_number,
            sop_instance_uid=new_uid(settings),
            instance_number=instance_number,
            manufacturer=settings.manufacturer,
            patient_orientation=orientation,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            institution_name=settings.institution_name or None,
            software_versions=analysis.software_version,
            series_description=SERIES_DESCRIPTION,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ReportBuildError(f"highdicom refused the key image capture: {mask_quoted(str(exc))}") from exc
    # Type 2C in General Series; dciodvfy asks for it on an SC. A head is not a paired
    # structure, so it is present and empty.
    capture.Laterality = ""
    capture.BurnedInAnnotation = "YES"
    capture.RecognizableVisualFeatures = "NO"
    capture.LossyImageCompression = "00"
    capture.ImageComments = "NOT FOR DIAGNOSIS: automated hemex result, not verified by a radiologist"
    capture.DerivationDescription = (f"Largest-hematoma slice in a brain window (W80 L40) with the"
                                     f" {analysis.measurements.method_name} {analysis.measurements.method_version}"
                                     " mask outline and the report's figures burned in")
    reference = Dataset()
    reference.ReferencedSOPClassUID = source_image.SOPClassUID
    reference.ReferencedSOPInstanceUID = source_image.SOPInstanceUID
    if frame_number is not None:
        reference.ReferencedFrameNumber = frame_number
    capture.SourceImageSequence = [reference]
    return capture
