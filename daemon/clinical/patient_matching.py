"""Clinical variables for one CT study, from the observations stored for its patient.

Rules (docs/hl7.md):
- the patient is found by Patient ID and Issuer of Patient ID (the HL7 assigning
  authority, namespace or universal id); identifiers sent without an authority match
  any issuer; with no issuer on the study the ID must name exactly one patient; merges
  are followed;
- observations stored with an accession number (OBR-18) that differs from the study's
  are not used; observations with the study's accession are used even when the patient
  identifier differs (e.g. a temporary emergency ID);
- an observation counts when its time lies in [CT - match_window_before_h,
  CT + match_window_after_h]; per variable the latest one at or before the CT wins,
  otherwise the earliest one after it; an onset time must lie before the CT;
- age (completed years at the CT date) and sex come from the ADT/PID demographics.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from daemon.clinical.clinical_store import surviving_key
from daemon.clinical.observation_mapping import VARIABLES
from daemon.config import Hl7Settings
from daemon.state.database import Database
from domain.clinical import ClinicalVariables


@dataclass(frozen=True)
class Provenance:
    """Where a matched value came from; no PHI (row ids, codes and times only)."""

    source: str  # e.g. "LN:6301-6", "ATC:B01AF01", "PID-7"
    observed_at: datetime | None
    hours_from_ct: float | None  # negative = before the CT
    message_id: int | None
    matched_by: str  # "patient" | "accession" | "demographics" | "derived"


def patient_keys(conn: sqlite3.Connection, patient_id: str | None, issuer: str | None) -> list[int]:
    """Surviving patient keys for a study's Patient ID / Issuer of Patient ID."""
    if not patient_id:
        return []
    rows = conn.execute("SELECT patient_key, issuer, issuer_universal FROM clinical_patient_ids"
                        " WHERE patient_id = ?", (patient_id,)).fetchall()
    if issuer:
        rows = [r for r in rows if r["issuer"] in ("", issuer) or r["issuer_universal"] == issuer]
    keys = sorted({surviving_key(conn, int(r["patient_key"])) for r in rows})
    # Without an issuer on either side an ID shared by two patients is ambiguous: no match.
    return keys if len(keys) == 1 or issuer else []


def _age(birth: date, on: date) -> float:
    return float(on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day)))


def clinical_variables_for_study(
    db: Database,
    patient_id: str | None,
    issuer: str | None,
    accession: str | None,
    ct_time: datetime | None,
    settings: Hl7Settings,
) -> tuple[ClinicalVariables, dict[str, Provenance]]:
    """Match stored HL7 data to one CT study.

    Parameters
    ----------
    patient_id, issuer, accession
        The study's Patient ID, Issuer of Patient ID and Accession Number (None when absent).
    ct_time
        CT acquisition time, naive local time; with None only demographics are matched.
    settings
        The ``[hl7]`` section (match window).

    Returns
    -------
    tuple
        The variables, and per variable name the provenance of its value.
    """
    conn = db.connection()
    keys = patient_keys(conn, patient_id, issuer)
    values: dict[str, object] = {}
    provenance: dict[str, Provenance] = {}
    if keys:
        patient = conn.execute(
            f"SELECT birth_date, sex FROM clinical_patients WHERE patient_key IN ({','.join('?' * len(keys))})"
            " AND (birth_date IS NOT NULL OR sex IS NOT NULL) ORDER BY updated_at DESC LIMIT 1", keys).fetchone()
        if patient is not None:
            if patient["birth_date"]:
                birth = date.fromisoformat(patient["birth_date"])
                values["age_years"] = _age(birth, (ct_time or datetime.now()).date())
                provenance["age_years"] = Provenance("PID-7", None, None, None, "demographics")
            if patient["sex"]:
                values["sex"] = patient["sex"]
                provenance["sex"] = Provenance("PID-8", None, None, None, "demographics")
    if ct_time is not None and (keys or accession):
        _match_observations(conn, keys, accession, ct_time, settings, values, provenance)
    onset = values.get("onset_time")
    if isinstance(onset, datetime) and ct_time is not None:
        values["hours_onset_to_ct"] = round((ct_time - onset).total_seconds() / 3600.0, 2)
        provenance["hours_onset_to_ct"] = Provenance("onset_time", None, None, None, "derived")
    return ClinicalVariables(**values), provenance  # type: ignore[arg-type]


def _match_observations(conn: sqlite3.Connection, keys: list[int], accession: str | None, ct_time: datetime,
                        settings: Hl7Settings, values: dict[str, object],
                        provenance: dict[str, Provenance]) -> None:
    low = ct_time - timedelta(hours=settings.match_window_before_h)
    high = ct_time + timedelta(hours=settings.match_window_after_h)
    where = []
    params: list[object] = []
    if keys:
        where.append(f"patient_key IN ({','.join('?' * len(keys))})")
        params.extend(keys)
    if accession:
        where.append("accession = ?")
        params.append(accession)
    rows = conn.execute(
        f"SELECT id, patient_key, variable, value_num, value_time, observed_at, accession, source_code,"
        f" message_id FROM clinical_observations WHERE ({' OR '.join(where)})"
        " AND observed_at >= ? AND observed_at <= ? ORDER BY id",
        (*params, low.isoformat(), high.isoformat())).fetchall()
    best: dict[str, tuple[tuple[int, float, int], sqlite3.Row, datetime]] = {}
    for row in rows:
        if row["accession"] and accession and row["accession"] != accession:
            continue  # ordered for another exam
        observed = datetime.fromisoformat(row["observed_at"])
        if row["variable"] == "onset_time" and observed > ct_time:
            continue
        delta = (observed - ct_time).total_seconds()
        # Before the CT first (latest wins), then after it (earliest wins); ties: newest row.
        rank = (0 if delta <= 0 else 1, abs(delta), -int(row["id"]))
        if row["variable"] not in best or rank < best[row["variable"]][0]:
            best[row["variable"]] = (rank, row, observed)
    for variable, (_, row, observed) in best.items():
        spec = VARIABLES[variable]
        if spec.kind == "time":
            values[variable] = datetime.fromisoformat(row["value_time"])
        elif spec.kind == "boolean":
            values[variable] = bool(row["value_num"])
        elif spec.kind == "integer":
            values[variable] = int(row["value_num"])
        else:
            values[variable] = float(row["value_num"])
        provenance[variable] = Provenance(
            row["source_code"], observed, round((observed - ct_time).total_seconds() / 3600.0, 2),
            int(row["message_id"]),
            "patient" if int(row["patient_key"]) in keys else "accession")
