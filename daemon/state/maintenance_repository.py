"""Figures of the last run of each scheduled maintenance task (``maintenance_runs``)."""

from __future__ import annotations

import json

from sqlalchemy import Connection, text


class MaintenanceRepository:
    """The ``maintenance_runs`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def record_run(self, task: str, ran_at: float, figures: dict[str, float]) -> None:
        """Keep ``figures`` as the last run of ``task``."""
        self._conn.execute(text(
            "INSERT INTO maintenance_runs(task, ran_at, figures_json) VALUES (:task, :ran_at, :figures)"
            " ON CONFLICT(task) DO UPDATE SET ran_at = excluded.ran_at, figures_json = excluded.figures_json"),
            {"task": task, "ran_at": ran_at, "figures": json.dumps(figures)})

    def last_runs(self) -> dict[str, tuple[float, dict[str, float]]]:
        """Task -> (when it last ran, its figures)."""
        rows = self._conn.execute(text("SELECT task, ran_at, figures_json FROM maintenance_runs"))
        return {row.task: (float(row.ran_at), json.loads(row.figures_json)) for row in rows}
