"""Alerts raised, once per study and alert key (``alerts`` table)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Row, text


@dataclass(frozen=True)
class RaisedAlert:
    """An alert raised for a study: its key (rule and risk category) and when."""

    study_uid: str
    alert_key: str
    created_at: float


def _raised(row: Row) -> RaisedAlert:
    return RaisedAlert(row.study_uid, row.alert_key, float(row.created_at))


class AlertRepository:
    """The ``alerts`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def record_once(self, study_uid: str, alert_key: str, now: float) -> bool:
        """Record that ``alert_key`` was raised for the study; False when it was before."""
        return self._conn.execute(text(
            "INSERT INTO alerts(study_uid, alert_key, created_at) VALUES (:uid, :key, :now)"
            " ON CONFLICT(study_uid, alert_key) DO NOTHING"),
            {"uid": study_uid, "key": alert_key, "now": now}).rowcount == 1

    def raised(self, study_uid: str, alert_key: str) -> bool:
        return self._conn.execute(text("SELECT 1 FROM alerts WHERE study_uid = :uid AND alert_key = :key"),
                                  {"uid": study_uid, "key": alert_key}).first() is not None

    def keys_of(self, study_uid: str) -> list[str]:
        """Every alert key raised for the study."""
        rows = self._conn.execute(text("SELECT alert_key FROM alerts WHERE study_uid = :uid ORDER BY alert_key"),
                                  {"uid": study_uid})
        return [row.alert_key for row in rows]

    def of_study(self, study_uid: str) -> list[RaisedAlert]:
        """The study's alerts, oldest first."""
        rows = self._conn.execute(text(
            "SELECT study_uid, alert_key, created_at FROM alerts WHERE study_uid = :uid ORDER BY created_at"),
            {"uid": study_uid})
        return [_raised(row) for row in rows]

    def raised_since(self, since: float, limit: int = 500) -> list[RaisedAlert]:
        """Alerts raised since ``since``, newest first."""
        rows = self._conn.execute(text(
            "SELECT study_uid, alert_key, created_at FROM alerts WHERE created_at >= :since"
            " ORDER BY created_at DESC LIMIT :limit"), {"since": since, "limit": limit})
        return [_raised(row) for row in rows]
