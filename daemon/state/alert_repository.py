"""Alerts raised (once per study and alert key) and their life afterwards: the group one
acknowledgement answers, each step with its time, and the outbox items that carry them
(``alerts``, ``alert_groups``, ``alert_events``, ``alert_deliveries``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Row, text

from domain.alerts import AlertEvent, AlertGroup, AlertStep


@dataclass(frozen=True)
class AlertTiming:
    """One alert's times, for the metrics (epoch seconds; None when not reached)."""

    queued_at: float
    images_received_at: float | None
    sent_at: float | None
    acknowledged_at: float | None

@dataclass(frozen=True)
class RaisedAlert:
    """An alert raised for a study: its key (rule and risk category) and when."""

    study_uid: str
    alert_key: str
    created_at: float


def _raised(row: Row) -> RaisedAlert:
    return RaisedAlert(row.study_uid, row.alert_key, float(row.created_at))


class AlertRepository:
    """The alert tables."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    # --- raised once per study and key ------------------------------------------------------
    def record_once(self, study_uid: str, alert_key: str, now: float, group_ref: str | None = None,
                    images_received_at: float | None = None) -> bool:
        """Record that ``alert_key`` was raised for the study; False when it was before."""
        return self._conn.execute(text(
            "INSERT INTO alerts(study_uid, alert_key, created_at, group_ref, images_received_at)"
            " VALUES (:uid, :key, :now, :group, :images) ON CONFLICT(study_uid, alert_key) DO NOTHING"),
            {"uid": study_uid, "key": alert_key, "now": now, "group": group_ref,
             "images": images_received_at}).rowcount == 1

    def raised(self, study_uid: str, alert_key: str) -> bool:
        return self._conn.execute(text("SELECT 1 FROM alerts WHERE study_uid = :uid AND alert_key = :key"),
                                  {"uid": study_uid, "key": alert_key}).first() is not None

    def keys_of(self, study_uid: str) -> list[str]:
        """Every alert key raised for the study."""
        rows = self._conn.execute(text("SELECT alert_key FROM alerts WHERE study_uid = :uid ORDER BY alert_key"),
                                  {"uid": study_uid})
        return [row.alert_key for row in rows]

    # --- groups ------------------------------------------------------------------------------
    def open_group_of(self, study_uids: Sequence[str], created_since: float) -> AlertGroup | None:
        """The newest unacknowledged group, created at or after ``created_since``, that an
        alert of any of ``study_uids`` joined; None when there is none."""
        if not study_uids:
            return None
        marks = ", ".join(f":s{i}" for i in range(len(study_uids)))
        row = self._conn.execute(text(
            "SELECT DISTINCT g.ref, g.created_at FROM alert_groups g JOIN alerts a ON a.group_ref = g.ref"
            f" WHERE a.study_uid IN ({marks}) AND g.created_at >= :since"
            " AND (g.acknowledged_at IS NULL OR g.acknowledged_at < g.last_alert_at)"
            " ORDER BY g.created_at DESC LIMIT 1"),
            {**{f"s{i}": uid for i, uid in enumerate(study_uids)}, "since": created_since}).first()
        return None if row is None else self.group(row.ref)

    def join_group(self, ref: str, short_code: str, now: float) -> bool:
        """Create the group, or move its last alert to ``now``; True when it was created."""
        created = self._conn.execute(text(
            "INSERT INTO alert_groups(ref, short_code, created_at, last_alert_at) VALUES (:ref, :code, :now, :now)"
            " ON CONFLICT(ref) DO NOTHING"), {"ref": ref, "code": short_code, "now": now}).rowcount == 1
        if not created:
            self._conn.execute(text("UPDATE alert_groups SET last_alert_at = :now WHERE ref = :ref"),
                               {"now": now, "ref": ref})
        return created

    def add_event(self, ref: str, step: AlertStep, at: float, detail: str = "", study_uid: str | None = None,
                  alert_key: str | None = None) -> None:
        self._conn.execute(text(
            "INSERT INTO alert_events(group_ref, study_uid, alert_key, step, at, detail)"
            " VALUES (:ref, :uid, :key, :step, :at, :detail)"),
            {"ref": ref, "uid": study_uid, "key": alert_key, "step": step.value, "at": at, "detail": detail})

    def add_delivery(self, outbox_id: int, ref: str, study_uid: str, alert_key: str, contact: str = "") -> None:
        """Tie an outbox item to the alert it carries (its delivery becomes a step)."""
        self._conn.execute(text(
            "INSERT INTO alert_deliveries(outbox_id, group_ref, study_uid, alert_key, contact)"
            " VALUES (:id, :ref, :uid, :key, :contact) ON CONFLICT(outbox_id) DO NOTHING"),
            {"id": outbox_id, "ref": ref, "uid": study_uid, "key": alert_key, "contact": contact})

    def on_delivered(self, outbox_id: int, now: float) -> None:
        """An outbox item was accepted by its peer: the alert it carries is ``sent`` when
        this is its first accepted delivery, ``delivered`` when it is its last pending one."""
        row = self._conn.execute(text(
            "SELECT d.group_ref, d.study_uid, d.alert_key, d.contact, o.channel, o.destination"
            " FROM alert_deliveries d JOIN outbox o ON o.id = d.outbox_id WHERE d.outbox_id = :id"),
            {"id": outbox_id}).first()
        if row is None:
            return
        counts = self._conn.execute(text(
            "SELECT SUM(CASE WHEN o.state = 'delivered' THEN 1 ELSE 0 END) AS done, COUNT(*) AS n"
            " FROM alert_deliveries d JOIN outbox o ON o.id = d.outbox_id"
            " WHERE d.group_ref = :ref AND d.study_uid = :uid AND d.alert_key = :key"
            " AND d.contact = :contact"),
            {"ref": row.group_ref, "uid": row.study_uid, "key": row.alert_key, "contact": row.contact}).one()
        detail = f"{row.channel} {row.destination}"
        common = {"study_uid": row.study_uid, "alert_key": row.alert_key}
        if int(counts.done or 0) == 1:
            self.add_event(row.group_ref, AlertStep.SENT, now, detail, **common)
        if int(counts.done or 0) == int(counts.n):
            self.add_event(row.group_ref, AlertStep.DELIVERED, now,
                           "every channel" + (f" of {row.contact}" if row.contact else ""), **common)

    def latest_member(self, ref: str) -> tuple[str, str] | None:
        """(study UID, alert key) of the group's newest alert, or None."""
        row = self._conn.execute(text(
            "SELECT study_uid, alert_key FROM alerts WHERE group_ref = :ref ORDER BY created_at DESC LIMIT 1"),
            {"ref": ref}).first()
        return None if row is None else (row.study_uid, row.alert_key)

    def acknowledge(self, ref: str, by: str, now: float) -> bool:
        """Record an acknowledgement; False when the group was not open (nothing changes)."""
        changed = self._conn.execute(text(
            "UPDATE alert_groups SET acknowledged_at = :now, acknowledged_by = :by WHERE ref = :ref"
            " AND (acknowledged_at IS NULL OR acknowledged_at < last_alert_at)"),
            {"now": now, "by": by, "ref": ref}).rowcount == 1
        if changed:
            self.add_event(ref, AlertStep.ACKNOWLEDGED, now, by)
        return changed

    def set_level(self, ref: str, level: int) -> None:
        self._conn.execute(text("UPDATE alert_groups SET level = :level WHERE ref = :ref"),
                           {"level": level, "ref": ref})

    def group(self, ref: str) -> AlertGroup | None:
        row = self._conn.execute(text("SELECT * FROM alert_groups WHERE ref = :ref"), {"ref": ref}).first()
        return None if row is None else self._group(row)

    def group_by_code(self, short_code: str) -> AlertGroup | None:
        row = self._conn.execute(text("SELECT * FROM alert_groups WHERE short_code = :code"),
                                 {"code": short_code}).first()
        return None if row is None else self._group(row)

    def recent_groups(self, limit: int = 50) -> list[AlertGroup]:
        """The newest groups first."""
        rows = self._conn.execute(text("SELECT * FROM alert_groups ORDER BY last_alert_at DESC LIMIT :n"),
                                  {"n": limit})
        return [self._group(row) for row in rows]

    def _group(self, row: Row) -> AlertGroup:
        events = tuple(AlertEvent(AlertStep(e.step), e.at, e.detail) for e in self._conn.execute(text(
            "SELECT step, at, detail FROM alert_events WHERE group_ref = :ref ORDER BY at, id"), {"ref": row.ref}))
        handles = tuple(r.handle for r in self._conn.execute(text(
            "SELECT s.handle, MIN(a.created_at) AS first_at FROM alerts a JOIN studies s"
            " ON s.study_uid = a.study_uid WHERE a.group_ref = :ref GROUP BY s.handle ORDER BY first_at"),
            {"ref": row.ref}))
        return AlertGroup(row.ref, row.short_code, row.created_at, row.last_alert_at, row.acknowledged_at,
                          row.acknowledged_by, int(row.level), handles, events)

    # --- figures -------------------------------------------------------------------------------
    def timings(self) -> list[AlertTiming]:
        """Every grouped alert's queue, image, first-sent and acknowledgement times."""
        rows = self._conn.execute(text(
            "SELECT a.created_at, a.images_received_at,"
            " (SELECT MIN(e.at) FROM alert_events e WHERE e.group_ref = a.group_ref AND e.study_uid = a.study_uid"
            "   AND e.alert_key = a.alert_key AND e.step = 'sent') AS sent_at,"
            " (SELECT MIN(e.at) FROM alert_events e WHERE e.group_ref = a.group_ref AND e.step = 'acknowledged'"
            "   AND e.at >= a.created_at) AS acknowledged_at"
            " FROM alerts a WHERE a.group_ref IS NOT NULL"))
        return [AlertTiming(row.created_at, row.images_received_at, row.sent_at, row.acknowledged_at)
                for row in rows]

    def step_counts(self) -> dict[str, int]:
        rows = self._conn.execute(text("SELECT step, COUNT(*) AS n FROM alert_events GROUP BY step"))
        return {row.step: int(row.n) for row in rows}

    def open_count(self) -> int:
        return int(self._conn.execute(text(
            "SELECT COUNT(*) FROM alert_groups WHERE acknowledged_at IS NULL OR acknowledged_at < last_alert_at"
        )).scalar_one())
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
