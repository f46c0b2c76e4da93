"""Alerts raised, once per study and alert key (``alerts`` table)."""

from __future__ import annotations

from sqlalchemy import Connection, text


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
