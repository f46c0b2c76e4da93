"""Studies: who each is about and where it stands in its lifecycle (domain.study)."""

from __future__ import annotations

from sqlalchemy import Connection, Row, text

from daemon.state.locking import for_update
from domain.clinical import PatientIdentifier, identifier_matches
from domain.study import StudyEvent, StudyIdentity, StudyState, StudyStatus, next_state

_COLUMNS = ("study_uid, handle, patient_id, issuer_of_patient_id, accession_number, study_datetime,"
            " state, state_reason, created_at, updated_at")


def _identity(row: Row) -> StudyIdentity:
    return StudyIdentity(study_uid=row.study_uid, handle=row.handle, patient_id=row.patient_id,
                         issuer_of_patient_id=row.issuer_of_patient_id,
                         accession_number=row.accession_number, patient_name=None,
                         study_datetime=row.study_datetime)


def _status(row: Row) -> StudyStatus:
    return StudyStatus(_identity(row), StudyState(row.state), row.state_reason, row.created_at, row.updated_at)


class StudyRepository:
    """The ``studies`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def identity(self, study_uid: str) -> StudyIdentity:
        """Who and what the study is about.

        Raises
        ------
        KeyError
            No such study.
        """
        return self.status(study_uid).identity

    def status(self, study_uid: str) -> StudyStatus:
        """The study with its state.

        Raises
        ------
        KeyError
            No such study.
        """
        row = self._conn.execute(text(f"SELECT {_COLUMNS} FROM studies WHERE study_uid = :uid"),
                                 {"uid": study_uid}).first()
        if row is None:
            raise KeyError("no such study")
        return _status(row)

    def by_handle(self, handle: str) -> StudyStatus | None:
        """The study whose non-PHI handle is ``handle`` (the console's links), or None."""
        row = self._conn.execute(text(f"SELECT {_COLUMNS} FROM studies WHERE handle = :handle"),
                                 {"handle": handle}).first()
        return None if row is None else _status(row)

    def find(self, study_uid: str) -> StudyStatus | None:
        """The study with its state, or None."""
        try:
            return self.status(study_uid)
        except KeyError:
            return None

    def last_image_at(self, study_uid: str) -> float | None:
        """When the study's last image was stored (time-to-alert counts from it)."""
        value = self._conn.execute(text("SELECT last_received_at FROM studies WHERE study_uid = :uid"),
                                   {"uid": study_uid}).scalar()
        return None if value is None else float(value)

    def record_event(self, study_uid: str, event: StudyEvent, now: float,
                     reason: str | None = None) -> StudyState:
        """Move the study along its state machine; returns the state it is in afterwards.

        ``reason`` is kept for failed and no_series (and cleared by any other state).
        """
        row = self._conn.execute(text("SELECT state FROM studies WHERE study_uid = :uid" + for_update(self._conn)),
                                 {"uid": study_uid}).first()
        if row is None:
            raise KeyError("no such study")
        new = next_state(StudyState(row.state), event)
        keep_reason = new in (StudyState.FAILED, StudyState.NO_SERIES)
        self._conn.execute(text(
            "UPDATE studies SET state = :state, state_reason = :reason, updated_at = :now"
            " WHERE study_uid = :uid"),
            {"state": new.value, "reason": reason if keep_reason else None, "now": now, "uid": study_uid})
        return new

    def last_received_at(self, study_uid: str) -> float | None:
        """When the study's newest image arrived, or None."""
        value = self._conn.execute(text("SELECT last_received_at FROM studies WHERE study_uid = :uid"),
                                   {"uid": study_uid}).scalar()
        return None if value is None else float(value)

    def lock(self, study_uid: str) -> None:
        """Hold the study's row until the transaction ends, so that decisions about the
        study (its last series completing, say) are taken by one node at a time."""
        self._conn.execute(text("SELECT 1 FROM studies WHERE study_uid = :uid" + for_update(self._conn)),
                           {"uid": study_uid})

    def counts_by_state(self) -> dict[str, int]:
        """How many studies are in each state."""
        rows = self._conn.execute(text("SELECT state, COUNT(*) AS n FROM studies GROUP BY state"))
        return {row.state: int(row.n) for row in rows}

    def in_states(self, states: tuple[StudyState, ...], limit: int = 100) -> list[StudyStatus]:
        """Studies in any of ``states``, most recently changed first."""
        if not states:
            return []
        marks = ", ".join(f":s{i}" for i in range(len(states)))
        rows = self._conn.execute(text(
            f"SELECT {_COLUMNS} FROM studies WHERE state IN ({marks}) ORDER BY updated_at DESC LIMIT :limit"),
            {**{f"s{i}": s.value for i, s in enumerate(states)}, "limit": limit})
        return [_status(row) for row in rows]

    def recent(self, since: float, limit: int = 500) -> list[StudyStatus]:
        """Studies changed since ``since``, most recent first."""
        rows = self._conn.execute(text(
            f"SELECT {_COLUMNS} FROM studies WHERE updated_at >= :since ORDER BY updated_at DESC"
            " LIMIT :limit"), {"since": since, "limit": limit})
        return [_status(row) for row in rows]

    def matching_identifiers(self, identifiers: list[PatientIdentifier]) -> list[StudyIdentity]:
        """Studies whose Patient ID and issuer name any of ``identifiers``
        (``domain.clinical.identifier_matches``, the rule clinical matching uses too)."""
        found: dict[str, StudyIdentity] = {}
        for ident in identifiers:
            for row in self._conn.execute(text(f"SELECT {_COLUMNS} FROM studies WHERE patient_id = :pid"),
                                          {"pid": ident.patient_id}):
                if identifier_matches(row.patient_id, row.issuer_of_patient_id, ident):
                    found[row.study_uid] = _identity(row)
        return [found[uid] for uid in sorted(found)]
