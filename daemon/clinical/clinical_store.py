"""Patients, identifiers, merges and observations in the clinical tables.

A patient is a ``clinical_patients`` row; every identifier (PID-3 repetition, with its
assigning authority) points at one. An A40 merge re-points the prior identifiers and
moves their observations to the surviving patient, so matching by either identifier
finds everything afterwards.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass

from daemon.clinical.hl7_parsing import MessageContent, PatientIdentifier
from daemon.clinical.observation_mapping import MappedObservation, Rejection, map_observation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppliedMessage:
    """What applying one message changed."""

    patient_key: int | None
    observations_stored: int
    rejections: tuple[Rejection, ...]
    accessions: tuple[str, ...]


def identifier_key(conn: sqlite3.Connection, ident: PatientIdentifier) -> int | None:
    """The patient an identifier points at (after merges), or None."""
    row = conn.execute("SELECT patient_key FROM clinical_patient_ids WHERE patient_id = ? AND issuer = ?",
                       (ident.patient_id, ident.issuer)).fetchone()
    return None if row is None else surviving_key(conn, int(row["patient_key"]))


def surviving_key(conn: sqlite3.Connection, patient_key: int) -> int:
    """Follow ``merged_into`` to the patient that survived all merges."""
    seen = {patient_key}
    while True:
        row = conn.execute("SELECT merged_into FROM clinical_patients WHERE patient_key = ?",
                           (patient_key,)).fetchone()
        if row is None or row["merged_into"] is None or row["merged_into"] in seen:
            return patient_key
        patient_key = int(row["merged_into"])
        seen.add(patient_key)


def _add_identifier(conn: sqlite3.Connection, ident: PatientIdentifier, patient_key: int) -> None:
    conn.execute(
        "INSERT INTO clinical_patient_ids(patient_id, issuer, issuer_universal, patient_key) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(patient_id, issuer) DO UPDATE SET patient_key = excluded.patient_key,"
        " issuer_universal = CASE WHEN excluded.issuer_universal != '' THEN excluded.issuer_universal"
        " ELSE issuer_universal END",
        (ident.patient_id, ident.issuer, ident.issuer_universal, patient_key),
    )


def patient_for(conn: sqlite3.Connection, identifiers: tuple[PatientIdentifier, ...]) -> int:
    """The patient these identifiers name, created when none is known.

    Identifiers of one PID-3 are aliases of one patient; unknown ones are attached to
    the first known one. Two known identifiers of different patients are not merged
    here (only an A40 merges), the first one wins.
    """
    known = [k for k in (identifier_key(conn, i) for i in identifiers) if k is not None]
    if known:
        key = known[0]
    else:
        key = int(conn.execute("INSERT INTO clinical_patients(updated_at) VALUES (?)", (time.time(),)).lastrowid or 0)
    for ident in identifiers:
        if identifier_key(conn, ident) is None:
            _add_identifier(conn, ident, key)
    return key


def merge_patients(conn: sqlite3.Connection, survivor: int, prior: tuple[PatientIdentifier, ...]) -> None:
    """A40: every prior identifier, and everything recorded under it, moves to ``survivor``."""
    for ident in prior:
        prior_key = identifier_key(conn, ident)
        if prior_key is None:
            _add_identifier(conn, ident, survivor)
            continue
        if prior_key == survivor:
            continue
        conn.execute("UPDATE clinical_patient_ids SET patient_key = ? WHERE patient_key = ?", (survivor, prior_key))
        conn.execute("UPDATE clinical_observations SET patient_key = ? WHERE patient_key = ?", (survivor, prior_key))
        conn.execute(
            "UPDATE clinical_patients SET"
            " birth_date = COALESCE(birth_date, (SELECT birth_date FROM clinical_patients WHERE patient_key = ?)),"
            " sex = COALESCE(sex, (SELECT sex FROM clinical_patients WHERE patient_key = ?)), updated_at = ?"
            " WHERE patient_key = ?", (prior_key, prior_key, time.time(), survivor))
        conn.execute("UPDATE clinical_patients SET merged_into = ?, updated_at = ? WHERE patient_key = ?",
                     (survivor, time.time(), prior_key))


def store_observation(conn: sqlite3.Connection, patient_key: int, obs: MappedObservation, message_id: int) -> None:
    """Insert one observation; a resend or correction of the same one replaces it."""
    observed_at = obs.observed_at.isoformat()
    conn.execute("DELETE FROM clinical_observations WHERE patient_key = ? AND variable = ? AND observed_at = ?"
                 " AND source_code = ?", (patient_key, obs.variable, observed_at, obs.source_code))
    conn.execute(
        "INSERT INTO clinical_observations(patient_key, variable, value_num, value_time, unit, observed_at,"
        " accession, source_code, message_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (patient_key, obs.variable, obs.value_num, obs.value_time.isoformat() if obs.value_time else None,
         obs.unit, observed_at, obs.accession, obs.source_code, message_id, time.time()),
    )


def apply_message(conn: sqlite3.Connection, message_id: int, purpose: str, content: MessageContent,
                  local_code_map: Mapping[str, str]) -> AppliedMessage:
    """Apply one accepted message inside the caller's transaction."""
    if not content.identifiers:
        return AppliedMessage(None, 0, (), ())
    key = patient_for(conn, content.identifiers)
    if content.birth_date is not None or content.sex is not None:
        # ADT is authoritative for demographics; other messages only fill gaps.
        if purpose in ("demographics", "merge"):
            conn.execute("UPDATE clinical_patients SET birth_date = COALESCE(?, birth_date),"
                         " sex = COALESCE(?, sex), updated_at = ? WHERE patient_key = ?",
                         (content.birth_date.isoformat() if content.birth_date else None, content.sex,
                          time.time(), key))
        else:
            conn.execute("UPDATE clinical_patients SET birth_date = COALESCE(birth_date, ?),"
                         " sex = COALESCE(sex, ?), updated_at = ? WHERE patient_key = ?",
                         (content.birth_date.isoformat() if content.birth_date else None, content.sex,
                          time.time(), key))
    if purpose == "merge":
        merge_patients(conn, key, content.merged_identifiers)
    stored = 0
    rejections: list[Rejection] = []
    accessions: set[str] = set()
    for raw in content.observations:
        mapped = map_observation(raw, local_code_map)
        if mapped is None:
            continue
        if isinstance(mapped, Rejection):
            rejections.append(mapped)
            # No value, no identifier: only what was rejected and why.
            log.warning("hl7 observation rejected message=%d variable=%s code=%s reason=%r",
                        message_id, mapped.variable, mapped.source_code, mapped.reason)
            continue
        store_observation(conn, key, mapped, message_id)
        if mapped.accession:
            accessions.add(mapped.accession)
        stored += 1
    return AppliedMessage(key, stored, tuple(rejections), tuple(sorted(accessions)))
