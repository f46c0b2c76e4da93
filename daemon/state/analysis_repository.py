"""Analyses handed from the analyse stage to the report stage, and the built reports
handed from the report stage to dispatch (``analyses`` table)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Connection, Row, text

from daemon.state.record_codec import from_json, to_json
from daemon.state.uid_lists import in_list_batches
from domain.analysis import AnalysisRecord, StudyAnalysis
from domain.report import ReportBundle


def _record(row: Row) -> AnalysisRecord:
    return AnalysisRecord(input_key=row.input_key, study_uid=row.study_uid, series_uid=row.series_uid,
                          folder=Path(row.folder), analysis=from_json(StudyAnalysis, row.analysis_json),
                          created_at=row.created_at,
                          mask_folder=Path(row.mask_folder) if row.mask_folder else None)




class AnalysisRepository:
    """The ``analyses`` table."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def add(self, record: AnalysisRecord) -> bool:
        """Store an analysis; False when one with its input key is stored already."""
        return self._conn.execute(text(
            "INSERT INTO analyses(study_uid, input_key, series_uid, folder, mask_folder, analysis_json,"
            " created_at) VALUES (:study_uid, :input_key, :series_uid, :folder, :mask_folder, :analysis,"
            " :created_at)"
            " ON CONFLICT(input_key) DO NOTHING"),
            {"study_uid": record.study_uid, "input_key": record.input_key, "series_uid": record.series_uid,
             "folder": str(record.folder), "analysis": to_json(record.analysis),
             "mask_folder": str(record.mask_folder) if record.mask_folder else None,
             "created_at": record.created_at}).rowcount == 1

    def by_input_key(self, input_key: str) -> AnalysisRecord | None:
        row = self._conn.execute(text("SELECT * FROM analyses WHERE input_key = :key"),
                                 {"key": input_key}).first()
        return None if row is None else _record(row)

    def latest_of(self, study_uids: Sequence[str]) -> dict[str, AnalysisRecord]:
        """The newest analysis of each of ``study_uids`` that has one (the console)."""
        found: dict[str, AnalysisRecord] = {}
        for marks, params in in_list_batches(study_uids):
            rows = self._conn.execute(text(
                f"SELECT * FROM analyses WHERE id IN (SELECT MAX(id) FROM analyses WHERE study_uid IN ({marks})"
                " GROUP BY study_uid)"), params)
            found.update({row.study_uid: _record(row) for row in rows})
        return found

    def latest_unreported(self, study_uid: str) -> AnalysisRecord | None:
        """The newest analysis of the study that has no built report yet."""
        row = self._conn.execute(text(
            "SELECT * FROM analyses WHERE study_uid = :uid AND bundle_json IS NULL"
            " ORDER BY id DESC LIMIT 1"), {"uid": study_uid}).first()
        return None if row is None else _record(row)

    def latest_reported(self, study_uid: str) -> AnalysisRecord | None:
        """The newest analysis of the study whose report went out (a result records it)."""
        row = self._conn.execute(text(
            "SELECT a.* FROM analyses a WHERE a.study_uid = :uid"
            " AND EXISTS (SELECT 1 FROM results r WHERE r.input_key = a.input_key)"
            " ORDER BY a.id DESC LIMIT 1"), {"uid": study_uid}).first()
        return None if row is None else _record(row)

    def attach_bundle(self, input_key: str, bundle: ReportBundle) -> None:
        """Record the report built from the analysis ``input_key``."""
        self._conn.execute(text("UPDATE analyses SET bundle_json = :bundle WHERE input_key = :key"),
                           {"bundle": to_json(bundle), "key": input_key})

    def latest_undispatched(self, study_uid: str) -> ReportBundle | None:
        """The newest built report of the study that no result records yet."""
        row = self._conn.execute(text(
            "SELECT a.bundle_json FROM analyses a WHERE a.study_uid = :uid AND a.bundle_json IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM results r WHERE r.input_key = a.input_key)"
            " ORDER BY a.id DESC LIMIT 1"), {"uid": study_uid}).first()
        return None if row is None else from_json(ReportBundle, row.bundle_json)
