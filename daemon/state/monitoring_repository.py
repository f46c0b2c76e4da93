"""The figures ``hemex status`` and ``/metrics`` show, read in one snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class NodeFigures:
    """Counts and ages read from the node database at one moment (no PHI)."""

    studies: dict[str, int]
    series: dict[str, int]
    jobs: dict[tuple[str, str], int]  # (kind, state) -> count
    outbox: dict[tuple[str, str], int]  # (channel, state) -> count
    dead_letters: int
    oldest_pending_delivery_at: float | None
    instances: int
    last_instance_at: float | None
    hl7_messages: int
    hl7_unprocessed: int


class MonitoringRepository:
    """Read-only queries across tables for monitoring."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def figures(self) -> NodeFigures:
        """Every figure; call inside ``Database.reading()`` so they agree with each other."""
        def counts(table: str) -> dict[str, int]:
            return {row[0]: int(row[1]) for row in self._conn.execute(
                text(f"SELECT state, COUNT(*) FROM {table} GROUP BY state"))}

        def grouped(table: str, column: str) -> dict[tuple[str, str], int]:
            return {(row[0], row[1]): int(row[2]) for row in self._conn.execute(
                text(f"SELECT {column}, state, COUNT(*) FROM {table} GROUP BY {column}, state"))}

        def number(sql: str) -> float | None:
            value = self._conn.execute(text(sql)).scalar()
            return None if value is None else float(value)

        hl7 = self._conn.execute(text(
            "SELECT COUNT(*) AS stored, SUM(CASE WHEN processed_at IS NULL THEN 1 ELSE 0 END) AS unprocessed"
            " FROM hl7_messages")).one()
        oldest = number("SELECT MIN(created_at) FROM outbox WHERE state = 'pending'")
        # The series table changes with every new instance and is far smaller than the
        # instances table, so its newest time is the cheap way to the last arrival.
        last = number("SELECT MAX(last_received_at) FROM series")
        return NodeFigures(
            studies=counts("studies"), series=counts("series"), jobs=grouped("jobs", "kind"),
            outbox=grouped("outbox", "channel"),
            dead_letters=int(number("SELECT COUNT(*) FROM outbox WHERE state = 'dead'") or 0),
            oldest_pending_delivery_at=oldest,
            instances=int(number("SELECT COUNT(*) FROM instances") or 0),
            last_instance_at=last,
            hl7_messages=int(hl7.stored), hl7_unprocessed=int(hl7.unprocessed or 0),
        )

    def answers(self) -> bool:
        """True when the database answers a query (``/healthz``)."""
        return self._conn.execute(text("SELECT 1 FROM studies LIMIT 1")).all() is not None
