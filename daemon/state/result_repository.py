"""Results: the reports that went out for each study (``results`` table)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Row, text

from domain.report import ReportBundle


@dataclass(frozen=True)
class StoredResult:
    """A dispatched report as stored."""

    id: int
    study_uid: str
    status: str  # PARTIAL | COMPLETE
    sr_sop_uid: str
    seg_sop_uid: str | None
    sr_path: Path
    seg_path: Path | None
    risk_category: str | None
    summary: dict[str, object]
    input_key: str | None
    created_at: float

    @property
    def folder(self) -> Path:
        return self.sr_path.parent


def _result(row: Row) -> StoredResult:
    return StoredResult(int(row.id), row.study_uid, row.status, row.sr_sop_uid, row.seg_sop_uid,
                        Path(row.sr_path), Path(row.seg_path) if row.seg_path else None, row.risk_category,
                        json.loads(row.summary_json), row.input_key, row.created_at)


class ResultRepository:
    """The ``results`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def add(self, bundle: ReportBundle, now: float) -> int:
        """Record a dispatched report; returns its id."""
        sr, seg = bundle.object_of("SR"), bundle.object_of("SEG")
        if sr is None:
            raise ValueError("a report bundle without an SR")
        return int(self._conn.execute(text(
            "INSERT INTO results(study_uid, status, sr_sop_uid, seg_sop_uid, sr_path, seg_path,"
            " risk_category, summary_json, input_key, created_at) VALUES (:study_uid, :status, :sr_uid,"
            " :seg_uid, :sr_path, :seg_path, :risk, :summary, :input_key, :now) RETURNING id"),
            {"study_uid": bundle.study_uid, "status": bundle.completion, "sr_uid": sr.sop_instance_uid,
             "seg_uid": seg.sop_instance_uid if seg else None, "sr_path": str(sr.path),
             "seg_path": str(seg.path) if seg else None, "risk": bundle.risk_category,
             "summary": json.dumps(bundle.summary, default=str), "input_key": bundle.input_key,
             "now": now}).scalar_one())

    def made_from(self, input_key: str) -> StoredResult | None:
        """The result already made from ``input_key``, or None."""
        row = self._conn.execute(text("SELECT * FROM results WHERE input_key = :key ORDER BY id LIMIT 1"),
                                 {"key": input_key}).first()
        return None if row is None else _result(row)

    def of_study(self, study_uid: str) -> list[StoredResult]:
        """Every result of the study, oldest first."""
        rows = self._conn.execute(text("SELECT * FROM results WHERE study_uid = :uid ORDER BY id"),
                                  {"uid": study_uid})
        return [_result(row) for row in rows]

    def latest(self, study_uid: str) -> StoredResult | None:
        """The study's newest result, or None."""
        row = self._conn.execute(text(
            "SELECT * FROM results WHERE study_uid = :uid ORDER BY id DESC LIMIT 1"), {"uid": study_uid}).first()
        return None if row is None else _result(row)

    def newest(self) -> StoredResult | None:
        """The last result made on any study, or None."""
        row = self._conn.execute(text("SELECT * FROM results ORDER BY id DESC LIMIT 1")).first()
        return None if row is None else _result(row)

    def created_before(self, cutoff: float) -> list[StoredResult]:
        """Results made before ``cutoff`` (retention)."""
        rows = self._conn.execute(text("SELECT * FROM results WHERE created_at < :cutoff ORDER BY id"),
                                  {"cutoff": cutoff})
        return [_result(row) for row in rows]
