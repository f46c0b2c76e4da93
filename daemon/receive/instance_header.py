"""The identifying attributes of a received instance, read and checked once."""

from __future__ import annotations

from pydicom.dataset import Dataset

from domain.errors import InvalidInputError
from domain.study import ReceivedInstance, is_valid_uid

_UID_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value).strip() or None if value not in (None, "") else None


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
    )
