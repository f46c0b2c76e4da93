"""Patients, identifiers, merges and observations from HL7 (the ``clinical_*`` tables).

A patient is a ``clinical_patients`` row; every identifier (PID-3 repetition, with its
assigning authority) points at one. An A40 merge re-points the prior identifiers and
moves their observations to the surviving patient, so matching by either identifier
finds everything afterwards.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text

from daemon.state.locking import on_postgresql
from domain.clinical import (
    Demographics,
    Observation,
    PatientIdentifier,
    StoredObservation,
    identifier_matches,
)
from domain.followup import Procedure

_CLINICAL_LOCK = 0x68656D6F63  # an advisory lock key of the node's own


class ClinicalRepository:
    """The clinical tables."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def serialise_changes(self) -> None:
        """Hold the clinical tables' change lock until the transaction ends (PostgreSQL;
        SQLite write transactions are exclusive already)."""
        if on_postgresql(self._conn):
            self._conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLINICAL_LOCK})

    # --- patients and identifiers --------------------------------------------------------
    def key_of(self, ident: PatientIdentifier) -> int | None:
        """The patient an identifier points at (after merges), or None."""
        row = self._conn.execute(text(
            "SELECT patient_key FROM clinical_patient_ids WHERE patient_id = :pid AND issuer = :issuer"),
            {"pid": ident.patient_id, "issuer": ident.issuer}).first()
        return None if row is None else self.surviving_key(int(row.patient_key))

    def surviving_key(self, patient_key: int) -> int:
        """Follow ``merged_into`` to the patient that survived all merges."""
        seen = {patient_key}
        while True:
            row = self._conn.execute(text("SELECT merged_into FROM clinical_patients WHERE patient_key = :key"),
                                     {"key": patient_key}).first()
            if row is None or row.merged_into is None or row.merged_into in seen:
                return patient_key
            patient_key = int(row.merged_into)
            seen.add(patient_key)

    def _add_identifier(self, ident: PatientIdentifier, patient_key: int) -> None:
        self._conn.execute(text(
            "INSERT INTO clinical_patient_ids(patient_id, issuer, issuer_universal, patient_key)"
            " VALUES (:pid, :issuer, :universal, :key) ON CONFLICT(patient_id, issuer) DO UPDATE SET"
            " patient_key = excluded.patient_key, issuer_universal = CASE WHEN excluded.issuer_universal != ''"
            " THEN excluded.issuer_universal ELSE clinical_patient_ids.issuer_universal END"),
            {"pid": ident.patient_id, "issuer": ident.issuer, "universal": ident.issuer_universal,
             "key": patient_key})

    def patient_for(self, identifiers: tuple[PatientIdentifier, ...], now: float) -> int:
        """The patient these identifiers name, created when none is known.

        Identifiers of one PID-3 are aliases of one patient; unknown ones are attached to
        the first known one. Two known identifiers of different patients are not merged
        here (only an A40 merges), the first one wins.
        """
        known = [k for k in (self.key_of(i) for i in identifiers) if k is not None]
        if known:
            key = known[0]
        else:
            key = int(self._conn.execute(text(
                "INSERT INTO clinical_patients(updated_at) VALUES (:now) RETURNING patient_key"),
                {"now": now}).scalar_one())
        for ident in identifiers:
            if self.key_of(ident) is None:
                self._add_identifier(ident, key)
        return key

    def identifiers_of(self, patient_key: int) -> list[PatientIdentifier]:
        """Every identifier that points at the patient."""
        rows = self._conn.execute(text(
            "SELECT patient_id, issuer, issuer_universal FROM clinical_patient_ids WHERE patient_key = :key"),
            {"key": patient_key})
        return [PatientIdentifier(row.patient_id, row.issuer, row.issuer_universal) for row in rows]

    def merge(self, survivor: int, prior: tuple[PatientIdentifier, ...], now: float) -> None:
        """A40: every prior identifier, and everything recorded under it, moves to ``survivor``."""
        for ident in prior:
            prior_key = self.key_of(ident)
            if prior_key is None:
                self._add_identifier(ident, survivor)
                continue
            if prior_key == survivor:
                continue
            params = {"survivor": survivor, "prior": prior_key, "now": now}
            self._conn.execute(text("UPDATE clinical_patient_ids SET patient_key = :survivor"
                                    " WHERE patient_key = :prior"), params)
            self._conn.execute(text("UPDATE clinical_observations SET patient_key = :survivor"
                                    " WHERE patient_key = :prior"), params)
            # A procedure both records hold once already stays once.
            self._conn.execute(text(
                "DELETE FROM clinical_procedures WHERE patient_key = :prior AND EXISTS (SELECT 1 FROM"
                " clinical_procedures s WHERE s.patient_key = :survivor AND s.code_system ="
                " clinical_procedures.code_system AND s.code = clinical_procedures.code"
                " AND s.performed_at = clinical_procedures.performed_at)"), params)
            self._conn.execute(text("UPDATE clinical_procedures SET patient_key = :survivor"
                                    " WHERE patient_key = :prior"), params)
            self._conn.execute(text(
                "UPDATE clinical_patients SET"
                " birth_date = COALESCE(birth_date, (SELECT p.birth_date FROM clinical_patients p"
                "   WHERE p.patient_key = :prior)),"
                " sex = COALESCE(sex, (SELECT p.sex FROM clinical_patients p WHERE p.patient_key = :prior)),"
                " updated_at = :now WHERE patient_key = :survivor"), params)
            self._conn.execute(text("UPDATE clinical_patients SET merged_into = :survivor, updated_at = :now"
                                    " WHERE patient_key = :prior"), params)

    def update_demographics(self, patient_key: int, demographics: Demographics, authoritative: bool,
                            now: float) -> None:
        """Set birth date and sex: ``authoritative`` (ADT) replaces, otherwise fills gaps."""
        sql = ("UPDATE clinical_patients SET birth_date = COALESCE(:birth, birth_date),"
               " sex = COALESCE(:sex, sex), updated_at = :now WHERE patient_key = :key") if authoritative else (
               "UPDATE clinical_patients SET birth_date = COALESCE(birth_date, :birth),"
               " sex = COALESCE(sex, :sex), updated_at = :now WHERE patient_key = :key")
        self._conn.execute(text(sql), {"birth": demographics.birth_date, "sex": demographics.sex,
                                       "now": now, "key": patient_key})

    # --- observations --------------------------------------------------------------------
    def store_observation(self, patient_key: int, obs: Observation, message_id: int, now: float) -> None:
        """Insert one observation; a resend or correction of the same one replaces it."""
        observed_at = obs.observed_at.isoformat()
        params = {"key": patient_key, "variable": obs.variable, "observed_at": observed_at,
                  "source": obs.source_code}
        self._conn.execute(text(
            "DELETE FROM clinical_observations WHERE patient_key = :key AND variable = :variable"
            " AND observed_at = :observed_at AND source_code = :source"), params)
        self._conn.execute(text(
            "INSERT INTO clinical_observations(patient_key, variable, value_num, value_time, unit, observed_at,"
            " accession, source_code, message_id, created_at) VALUES (:key, :variable, :value_num,"
            " :value_time, :unit, :observed_at, :accession, :source, :message_id, :now)"),
            {**params, "value_num": obs.value_num,
             "value_time": obs.value_time.isoformat() if obs.value_time else None, "unit": obs.unit,
             "accession": obs.accession, "message_id": message_id, "now": now})

    def store_procedure(self, patient_key: int, procedure: Procedure, message_id: int, now: float) -> bool:
        """Record a procedure the EHR reported; False when it was recorded before (a resend)."""
        return self._conn.execute(text(
            "INSERT INTO clinical_procedures(patient_key, code_system, code, performed_at, message_id, created_at)"
            " VALUES (:key, :system, :code, :at, :message_id, :now) ON CONFLICT DO NOTHING"),
            {"key": patient_key, "system": procedure.code_system, "code": procedure.code,
             "at": procedure.performed_at.isoformat(), "message_id": message_id, "now": now}).rowcount == 1

    def procedures_between(self, patient_keys: list[int], low: datetime, high: datetime) -> list[Procedure]:
        """Procedures of these patients performed in [low, high], oldest first."""
        if not patient_keys:
            return []
        marks = ", ".join(f":k{i}" for i in range(len(patient_keys)))
        rows = self._conn.execute(text(
            "SELECT code_system, code, performed_at, message_id FROM clinical_procedures"
            f" WHERE patient_key IN ({marks}) AND performed_at >= :low AND performed_at <= :high"
            " ORDER BY performed_at, id"),
            {**{f"k{i}": k for i, k in enumerate(patient_keys)}, "low": low.isoformat(), "high": high.isoformat()})
        return [Procedure(row.code_system, row.code, datetime.fromisoformat(row.performed_at),
                          f"HL7 message {row.message_id}") for row in rows]

    # --- what matching reads ---------------------------------------------------------------
    def patient_keys(self, patient_id: str | None, issuer: str | None) -> list[int]:
        """Surviving patient keys for a study's Patient ID and Issuer of Patient ID.

        The identifiers follow ``domain.clinical.identifier_matches``. Without an issuer on
        the study an ID shared by two patients is ambiguous: no match.
        """
        if not patient_id:
            return []
        rows = self._conn.execute(text(
            "SELECT patient_key, issuer, issuer_universal FROM clinical_patient_ids WHERE patient_id = :pid"),
            {"pid": patient_id})
        keys = sorted({self.surviving_key(int(row.patient_key)) for row in rows
                       if identifier_matches(patient_id, issuer,
                                             PatientIdentifier(patient_id, row.issuer, row.issuer_universal))})
        return keys if len(keys) == 1 or issuer else []

    def demographics(self, patient_keys: list[int]) -> Demographics | None:
        """The most recently updated birth date and sex among these patients, or None."""
        if not patient_keys:
            return None
        marks = ", ".join(f":k{i}" for i in range(len(patient_keys)))
        row = self._conn.execute(text(
            f"SELECT birth_date, sex FROM clinical_patients WHERE patient_key IN ({marks})"
            " AND (birth_date IS NOT NULL OR sex IS NOT NULL) ORDER BY updated_at DESC LIMIT 1"),
            {f"k{i}": k for i, k in enumerate(patient_keys)}).first()
        return None if row is None else Demographics(row.birth_date, row.sex)

    def observations_of_message(self, message_id: int) -> list[StoredObservation]:
        """The observations one HL7 message stored (where they now belong, after merges)."""
        return self._observations("message_id = :message_id", {"message_id": message_id})

    def observations_between(self, patient_keys: list[int], accession: str | None, low: datetime,
                             high: datetime) -> list[StoredObservation]:
        """Observations of these patients, or ordered under ``accession``, observed in [low, high]."""
        where: list[str] = []
        params: dict[str, object] = {"low": low.isoformat(), "high": high.isoformat()}
        if patient_keys:
            where.append("patient_key IN (" + ", ".join(f":k{i}" for i in range(len(patient_keys))) + ")")
            params.update({f"k{i}": k for i, k in enumerate(patient_keys)})
        if accession:
            where.append("accession = :accession")
            params["accession"] = accession
        if not where:
            return []
        return self._observations(f"({' OR '.join(where)}) AND observed_at >= :low AND observed_at <= :high",
                                  params)

    def _observations(self, where: str, params: dict[str, object]) -> list[StoredObservation]:
        rows = self._conn.execute(text(
            "SELECT id, patient_key, variable, value_num, value_time, unit, observed_at, accession,"
            f" source_code, message_id FROM clinical_observations WHERE {where} ORDER BY id"), params)
        return [StoredObservation(
            int(row.id), int(row.patient_key),
            Observation(row.variable, row.value_num,
                        datetime.fromisoformat(row.value_time) if row.value_time else None, row.unit,
                        datetime.fromisoformat(row.observed_at), row.source_code, row.accession),
            int(row.message_id)) for row in rows]
