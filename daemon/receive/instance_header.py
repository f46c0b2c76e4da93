"""The identifying attributes of a received instance, read and checked once."""

from __future__ import annotations

import math

from pydicom.dataset import Dataset

from domain.errors import InvalidInputError
from domain.study import ReceivedInstance, is_valid_uid

_UID_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value).strip() or None if value not in (None, "") else None


def slice_position(ds: Dataset) -> float | None:
    """The image's position in mm along the normal of its plane, or None.

    The projection of Image Position (Patient) on the cross product of the row and
    column directions of Image Orientation (Patient): evenly spaced for an evenly spaced
    stack, also when the gantry was tilted. None for a multi-frame image (one instance
    holds many positions) or when either attribute is missing or malformed.
    """
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return None
    try:
        position = [float(v) for v in ds.get("ImagePositionPatient") or ()]
        orientation = [float(v) for v in ds.get("ImageOrientationPatient") or ()]
    except (TypeError, ValueError):
        return None
    if len(position) != 3 or len(orientation) != 6:
        return None
    row, col = orientation[:3], orientation[3:]
    normal = (row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2], row[0] * col[1] - row[1] * col[0])
    length = math.sqrt(sum(v * v for v in normal))
    if not 0.5 < length < 1.5 or not all(math.isfinite(v) for v in position):
        return None
    return sum(p * n for p, n in zip(position, normal)) / length


def read_instance_header(ds: Dataset) -> ReceivedInstance:
    """The instance's UIDs and indexing attributes.

    Raises
    ------
    InvalidInputError
        A UID is missing or malformed, or Images in Acquisition is not a number.
    """
    uids = {}
    for keyword in _UID_KEYWORDS:
        value = str(ds.get(keyword, "") or "").strip()
        if not is_valid_uid(value):
            raise InvalidInputError(f"missing or invalid {keyword}")
        uids[keyword] = value
    try:
        expected = int(ds.get("ImagesInAcquisition") or 0)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("Images in Acquisition is not a number") from exc
    study_date, study_time = _text(ds, "StudyDate") or "", _text(ds, "StudyTime") or ""
    return ReceivedInstance(
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        modality=_text(ds, "Modality") or "",
        series_description=_text(ds, "SeriesDescription") or "",
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        study_datetime=(study_date + study_time) or None,
        expected_images=expected if expected > 0 else None,
        slice_position=slice_position(ds),
    )
