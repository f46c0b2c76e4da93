"""The one place that decides which patient and study attributes the reports may copy.

highdicom copies the root attributes of the Patient and Study modules of the source CT
into every SEG, SR and key-image KOS, and refuses the object when one of them is not a
valid value of its VR (a Patient's Birth Date of "00000000", common for unidentified
trauma patients, or "1950-06-15"). The ORU^R01 and the alerts take the study's identity
from the same attributes. A bad demographic field must never stop the analysis: every
invalid value is left out here, before any report is built (type 2 attributes stay
present and empty, as the standard allows when a value is unknown), with a WARNING
naming the attribute and the study's handle, never the value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM, validate_value

from domain.dicom_time import parse_dicom_datetime
from domain.study import StudyIdentity

log = logging.getLogger(__name__)

# Root attributes of the Patient, Clinical Trial Subject, General Study, Patient Study and
# Clinical Trial Study modules of the CT Image IOD (PS3.3 C.7.1.1, C.7.1.3, C.7.2.1,
# C.7.2.2, C.7.2.3), as highdicom copies them, with their type: a type 2 attribute is
# kept empty, any other is removed.
TYPE_2 = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
    "ReferringPhysicianName", "StudyID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
    "ClinicalTrialSiteName", "ClinicalTrialTimePointID", "PatientBreedDescription", "ResponsiblePerson",
    "ResponsibleOrganization", "PatientSexNeutered",
})
OTHER_TYPES = frozenset({
    "IssuerOfPatientID", "TypeOfPatientID", "PatientBirthTime", "PatientBirthDateInAlternativeCalendar",
    "PatientDeathDateInAlternativeCalendar", "PatientAlternativeCalendar", "QualityControlSubject",
    "StrainDescription", "StrainNomenclature", "StrainAdditionalInformation", "OtherPatientNames",
    "PatientSpeciesDescription", "ResponsiblePersonRole", "PatientComments", "PatientIdentityRemoved",
    "DeidentificationMethod", "ClinicalTrialSponsorName", "ClinicalTrialProtocolID",
    "IssuerOfClinicalTrialProtocolID", "IssuerOfClinicalTrialSiteID", "ClinicalTrialSubjectID",
    "IssuerOfClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "IssuerOfClinicalTrialSubjectReadingID",
    "ClinicalTrialProtocolEthicsCommitteeName", "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
    "ConsultingPhysicianName", "StudyDescription", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
    "RequestingService", "AdmittingDiagnosesDescription", "PatientAge", "PatientSize", "PatientBodyMassIndex",
    "MeasuredAPDimension", "MeasuredLateralDimension", "PatientWeight", "MedicalAlerts", "Allergies",
    "Occupation", "SmokingStatus", "AdditionalPatientHistory", "PregnancyStatus", "LastMenstrualDate",
    "ReasonForVisit", "AdmissionID", "ServiceEpisodeID", "ServiceEpisodeDescription", "PatientState",
    "ClinicalTrialTimePointDescription", "LongitudinalTemporalOffsetFromEvent",
    "LongitudinalTemporalEventType",
})
# Enumerated values the CT IODs define for these attributes (PS3.3 C.7.1.1, C.7.2.2).
ENUMERATED = {
    "PatientSex": frozenset({"M", "F", "O"}),
    "SmokingStatus": frozenset({"YES", "NO", "UNKNOWN"}),
    "PregnancyStatus": frozenset({"0001", "0002", "0003", "0004"}),
}
_TEMPORAL = {"DA": DA, "TM": TM, "DT": DT}


def invalid_reason(dataset: Dataset, keyword: str) -> str | None:
    """Why the value of ``keyword`` in ``dataset`` may not be copied (no value in the text), or None."""
    if keyword not in dataset:
        return None
    element = dataset[keyword]
    if element.VR == "SQ" or element.value in (None, "", b""):
        return None
    values = element.value if element.VM > 1 else [element.value]
    try:
        for value in values:
            text = str(value)
            validate_value(element.VR, text, pydicom_config.RAISE)
            if element.VR in _TEMPORAL:
                _TEMPORAL[element.VR](text)  # a real calendar date and clock time
    except (ValueError, TypeError, OverflowError):
        return f"not a valid {element.VR}"
    allowed = ENUMERATED.get(keyword)
    if allowed is not None and any(str(value) not in allowed for value in values):
        return f"not one of the values the standard defines ({', '.join(sorted(allowed))})"
    return None


def sanitised_source_headers(headers: Sequence[Dataset], handle: str) -> list[Dataset]:
    """Copies of ``headers`` whose patient and study attributes are all valid.

    Each invalid attribute is emptied (type 2) or removed, and named once per study in a
    WARNING. The input datasets are not changed.
    """
    reported: set[str] = set()
    clean = []
    for header in headers:
        copy = _copy_of(header)
        for keyword in sorted(TYPE_2 | OTHER_TYPES):
            reason = invalid_reason(copy, keyword)
            if reason is None:
                continue
            vr = copy[keyword].VR
            del copy[keyword]  # from the copy's own element dict; the shared element is untouched
            if keyword in TYPE_2:
                copy.add_new(keyword, vr, "")
            if keyword not in reported:
                reported.add(keyword)
                log.warning("report source attribute left out study=%s attribute=%s reason=%s", handle, keyword,
                            reason)
        clean.append(copy)
    return clean


def _copy_of(header: Dataset) -> Dataset:
    """A dataset with its own element dict (elements shared, never changed in place)."""
    copy = Dataset()
    copy.update(header)
    if hasattr(header, "file_meta"):
        copy.file_meta = header.file_meta
    copy.set_original_encoding(header.original_encoding[0], header.original_encoding[1],
                               header.original_character_set)
    return copy


def with_valid_identity(identity: StudyIdentity) -> StudyIdentity:
    """``identity`` for the ORU and the alerts: values that break the HL7 or DICOM limits
    of the attributes they came from are dropped (the same rules as the source headers)."""
    checks = {"patient_id": ("LO", identity.patient_id), "issuer_of_patient_id": ("LO", identity.issuer_of_patient_id),
              "accession_number": ("SH", identity.accession_number), "patient_name": ("PN", identity.patient_name)}
    changes: dict[str, str | None] = {}
    for field, (vr, value) in checks.items():
        if value is None:
            continue
        try:
            validate_value(vr, value, pydicom_config.RAISE)
        except (ValueError, TypeError):
            changes[field] = None
    if identity.study_datetime and parse_dicom_datetime(identity.study_datetime) is None:
        changes["study_datetime"] = None
    for field in sorted(changes):
        log.warning("report identity value left out study=%s field=%s reason=not valid", identity.handle, field)
    return replace(identity, **changes) if changes else identity  # type: ignore[arg-type]
