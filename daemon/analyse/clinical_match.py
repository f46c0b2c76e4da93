"""Clinical variables for one CT study, from the observations stored for its patient.

Rules (docs/hl7.md):
- the patient is found by Patient ID and Issuer of Patient ID (the HL7 assigning
  authority, namespace or universal id); identifiers sent without an authority match
  any issuer; with no issuer on the study the ID must name exactly one patient; merges
  are followed (``ClinicalRepository.patient_keys``, ``domain.clinical.identifier_matches``);
- observations stored with an accession number (OBR-18) that differs from the study's
  are not used; observations with the study's accession are used even when the patient
  identifier differs (e.g. a temporary emergency ID);
- an observation counts when its time lies in [CT - match_window_before_h,
  CT + match_window_after_h]; per variable the latest one at or before the CT wins,
  otherwise the earliest one after it; an onset time must lie before the CT;
- age (completed years at the CT date) and sex come from the ADT/PID demographics.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from daemon.config import Hl7Settings
from daemon.state.repositories import Repositories
from domain.clinical import (
    VARIABLES,
    ClinicalVariables,
    MatchedClinical,
    Provenance,
    StoredObservation,
)
from domain.study import StudyIdentity


def _age(birth: date, on: date) -> float:
    return float(on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day)))


def match_clinical(repos: Repositories, identity: StudyIdentity, ct_time: datetime | None,
                   settings: Hl7Settings) -> MatchedClinical:
    """The clinical variables of one CT study, each with where it came from.

    ``ct_time`` is the CT acquisition time (naive local time); without it only
    demographics are matched.
    """
    keys = repos.clinical.patient_keys(identity.patient_id, identity.issuer_of_patient_id)
    values: dict[str, object] = {}
    provenance: dict[str, Provenance] = {}
    demographics = repos.clinical.demographics(keys)
    if demographics is not None:
        if demographics.birth_date:
            birth = date.fromisoformat(demographics.birth_date)
            values["age_years"] = _age(birth, (ct_time or datetime.now()).date())
            provenance["age_years"] = Provenance("PID-7", None, None, None, "demographics")
        if demographics.sex:
            values["sex"] = demographics.sex
            provenance["sex"] = Provenance("PID-8", None, None, None, "demographics")
    if ct_time is not None and (keys or identity.accession_number):
        low = ct_time - timedelta(hours=settings.match_window_before_h)
        high = ct_time + timedelta(hours=settings.match_window_after_h)
        stored = repos.clinical.observations_between(keys, identity.accession_number, low, high)
        for variable, found in _best_per_variable(stored, identity.accession_number, ct_time).items():
            obs = found.observation
            values[variable] = _typed(variable, obs.value_num, obs.value_time)
            provenance[variable] = Provenance(
                obs.source_code, obs.observed_at, round((obs.observed_at - ct_time).total_seconds() / 3600.0, 2),
                found.message_id, "patient" if found.patient_key in keys else "accession")
    onset = values.get("onset_time")
    if isinstance(onset, datetime) and ct_time is not None:
        values["hours_onset_to_ct"] = round((ct_time - onset).total_seconds() / 3600.0, 2)
        provenance["hours_onset_to_ct"] = Provenance("onset_time", None, None, None, "derived")
    return MatchedClinical(ClinicalVariables(**values), provenance)  # type: ignore[arg-type]


def _best_per_variable(stored: list[StoredObservation], accession: str | None,
                       ct_time: datetime) -> dict[str, StoredObservation]:
    best: dict[str, tuple[tuple[int, float, int], StoredObservation]] = {}
    for found in stored:
        obs = found.observation
        if obs.accession and accession and obs.accession != accession:
            continue  # ordered for another exam
        if obs.variable == "onset_time" and obs.observed_at > ct_time:
            continue
        delta = (obs.observed_at - ct_time).total_seconds()
        # Before the CT first (latest wins), then after it (earliest wins); ties: newest row.
        rank = (0 if delta <= 0 else 1, abs(delta), -found.id)
        if obs.variable not in best or rank < best[obs.variable][0]:
            best[obs.variable] = (rank, found)
    return {variable: found for variable, (_, found) in best.items()}


def _typed(variable: str, value_num: float | None, value_time: datetime | None) -> object:
    kind = VARIABLES[variable].kind
    if kind == "time":
        return value_time
    if kind == "boolean":
        return bool(value_num)
    if kind == "integer":
        return int(value_num or 0)
    return float(value_num) if value_num is not None else None
