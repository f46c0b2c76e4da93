"""Which studies the node holds of one patient: the one rule follow-up pairing and alert
merging share.

Same Patient ID and Issuer of Patient ID (``domain.clinical.identifier_matches``: an
issuer missing on either side matches any), plus every identifier that an HL7 A40 merge
joined to the patient in the clinical tables. No SQL here: it composes repositories.
"""

from __future__ import annotations

from daemon.state.repositories import Repositories
from domain.clinical import PatientIdentifier
from domain.study import StudyIdentity


def studies_of_same_patient(repos: Repositories, identity: StudyIdentity) -> list[StudyIdentity]:
    """Every study of ``identity``'s patient, itself included, by Study Instance UID.

    A study without a Patient ID is its own only study: nothing can be paired with it.
    """
    if not identity.patient_id:
        return [identity]
    identifiers = [PatientIdentifier(identity.patient_id, identity.issuer_of_patient_id or "")]
    for key in repos.clinical.patient_keys(identity.patient_id, identity.issuer_of_patient_id):
        identifiers += repos.clinical.identifiers_of(key)
    found = {s.study_uid: s for s in repos.studies.matching_identifiers(list(dict.fromkeys(identifiers)))}
    found.setdefault(identity.study_uid, identity)
    return [found[uid] for uid in sorted(found)]


def patient_keys_of(repos: Repositories, identity: StudyIdentity) -> list[int]:
    """The clinical patient keys (after merges) of ``identity``'s patient."""
    return repos.clinical.patient_keys(identity.patient_id, identity.issuer_of_patient_id)
