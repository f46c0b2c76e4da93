"""Received images: studies, series and instances as the listener records them, and the
series' progress that completion is decided on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text

from domain.handles import study_handle
from domain.study import ReceivedInstance, SeriesProgress

_UPSERT_STUDY = text(
    "INSERT INTO studies(study_uid, handle, patient_id, issuer_of_patient_id, accession_number,"
    " study_datetime, state, created_at, updated_at, last_received_at)"
    " VALUES (:study_uid, :handle, :patient_id, :issuer, :accession, :study_datetime, 'received',"
    " :now, :now, :now)"
    " ON CONFLICT(study_uid) DO UPDATE SET last_received_at = excluded.last_received_at")
_UPSERT_SERIES = text(
    "INSERT INTO series(series_uid, study_uid, modality, description, expected_images,"
    " first_received_at, last_received_at) VALUES (:series_uid, :study_uid, :modality, :description,"
    " :expected, :now, :now) ON CONFLICT(series_uid) DO NOTHING")
_INSERT_INSTANCE = text(
    "INSERT INTO instances(sop_instance_uid, sop_class_uid, series_uid, study_uid, path, size_bytes,"
    " calling_ae_title, received_at, slice_position) VALUES (:sop_uid, :sop_class, :series_uid, :study_uid,"
    " :path, :size, :calling_ae, :now, :position) ON CONFLICT(sop_instance_uid) DO NOTHING")
_COUNT_INSTANCE = text(
    "UPDATE series SET instance_count = instance_count + 1, last_received_at = :now,"
    " state = 'receiving', recheck_at = :recheck_at,"
    " expected_images = COALESCE(expected_images, :expected) WHERE series_uid = :series_uid")


@dataclass(frozen=True)
class StoredInstance:
    """One received instance as recorded: where its file is and who sent it."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    path: Path
    size_bytes: int
    calling_ae_title: str
    received_at: float


@dataclass(frozen=True)
class SeriesOfStudy:
    """One series of a study as the study-level decisions see it."""

    series_uid: str
    complete: bool
    instance_count: int
    sample_path: Path  # one of its images (for the header)


class ImageRepository:
    """Studies, series and instances received over DICOM."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def holds(self, sop_instance_uid: str) -> bool:
        """True when this SOP Instance UID was stored before."""
        return self._conn.execute(text("SELECT 1 FROM instances WHERE sop_instance_uid = :uid"),
                                  {"uid": sop_instance_uid}).first() is not None

    def record(self, instance: ReceivedInstance, path: Path, size_bytes: int, calling_ae_title: str,
               now: float, recheck_at: float) -> SeriesProgress | None:
        """Record one stored instance with its study and series.

        Returns the series' progress with it, or None when the instance was held already.
        ``recheck_at`` is when the series' completion is to be decided again.
        """
        self._conn.execute(_UPSERT_STUDY, {
            "study_uid": instance.study_uid, "handle": study_handle(instance.study_uid),
            "patient_id": instance.patient_id, "issuer": instance.issuer_of_patient_id,
            "accession": instance.accession_number, "study_datetime": instance.study_datetime,
            "now": now})
        self._conn.execute(_UPSERT_SERIES, {
            "series_uid": instance.series_uid, "study_uid": instance.study_uid,
            "modality": instance.modality, "description": instance.series_description,
            "expected": instance.expected_images, "now": now})
        inserted = self._conn.execute(_INSERT_INSTANCE, {
            "sop_uid": instance.sop_instance_uid, "sop_class": instance.sop_class_uid,
            "series_uid": instance.series_uid, "study_uid": instance.study_uid, "path": str(path),
            "size": size_bytes, "calling_ae": calling_ae_title, "now": now,
            "position": instance.slice_position}).rowcount == 1
        if not inserted:
            return None
        self._conn.execute(_COUNT_INSTANCE, {"now": now, "recheck_at": recheck_at,
                                             "expected": instance.expected_images,
                                             "series_uid": instance.series_uid})
        return self.progress(instance.series_uid)

    # --- series progress ---------------------------------------------------------------
    def progress(self, series_uid: str) -> SeriesProgress | None:
        """A series still receiving, or None when it is complete or unknown."""
        row = self._conn.execute(text(
            "SELECT series_uid, study_uid, instance_count, expected_images, last_received_at FROM series"
            " WHERE series_uid = :uid AND state = 'receiving'"), {"uid": series_uid}).first()
        return None if row is None else SeriesProgress(row.series_uid, row.study_uid, row.instance_count,
                                                       row.expected_images, row.last_received_at)

    def slice_positions(self, series_uid: str) -> list[float | None]:
        """The slice position of every instance of the series (None where it has none)."""
        rows = self._conn.execute(text("SELECT slice_position FROM instances WHERE series_uid = :uid"),
                                  {"uid": series_uid})
        return [None if row.slice_position is None else float(row.slice_position) for row in rows]

    def series_of_study(self, study_uid: str) -> list[SeriesOfStudy]:
        """Every series of a study, complete or still receiving, with one image's path."""
        rows = self._conn.execute(text(
            "SELECT s.series_uid, s.state, s.instance_count, MIN(i.path) AS path FROM series s"
            " JOIN instances i ON i.series_uid = s.series_uid WHERE s.study_uid = :uid"
            " GROUP BY s.series_uid, s.state, s.instance_count ORDER BY s.series_uid"), {"uid": study_uid})
        return [SeriesOfStudy(row.series_uid, row.state == "complete", int(row.instance_count), Path(row.path))
                for row in rows]

    def series_due(self, now: float) -> list[str]:
        """Series still receiving whose completion check is due (the durable timers)."""
        rows = self._conn.execute(text(
            "SELECT series_uid FROM series WHERE state = 'receiving' AND (recheck_at IS NULL"
            " OR recheck_at <= :now) ORDER BY recheck_at"), {"now": now})
        return [row.series_uid for row in rows]

    def open_series(self) -> list[str]:
        """Every series still receiving."""
        return [row.series_uid for row in self._conn.execute(
            text("SELECT series_uid FROM series WHERE state = 'receiving'"))]

    def recheck_later(self, series_uid: str, at: float) -> None:
        """Take the completion decision of ``series_uid`` again at ``at``."""
        self._conn.execute(text("UPDATE series SET recheck_at = :at WHERE series_uid = :uid"),
                           {"at": at, "uid": series_uid})

    def complete_series(self, series_uid: str, reason: str, now: float) -> int:
        """Mark a series complete; returns how many series of its study are still open."""
        self._conn.execute(text(
            "UPDATE series SET state = 'complete', completed_at = :now, completion_reason = :reason,"
            " recheck_at = NULL WHERE series_uid = :uid"), {"now": now, "reason": reason, "uid": series_uid})
        return int(self._conn.execute(text(
            "SELECT COUNT(*) FROM series WHERE state = 'receiving' AND study_uid ="
            " (SELECT study_uid FROM series WHERE series_uid = :uid)"), {"uid": series_uid}).scalar_one())

    # --- what the analysis reads --------------------------------------------------------
    def instances(self, series_uid: str | None = None) -> list[StoredInstance]:
        """The instances of one series (or all), in the order they were received."""
        where = " WHERE series_uid = :uid" if series_uid is not None else ""
        rows = self._conn.execute(text(f"SELECT * FROM instances{where} ORDER BY received_at, sop_instance_uid"),
                                  {"uid": series_uid})
        return [StoredInstance(row.sop_instance_uid, row.sop_class_uid, row.series_uid, row.study_uid,
                               Path(row.path), int(row.size_bytes), row.calling_ae_title, row.received_at)
                for row in rows]

    def series_instance_count(self, series_uid: str) -> int | None:
        """How many instances the series has, or None when it is unknown."""
        value = self._conn.execute(text("SELECT instance_count FROM series WHERE series_uid = :uid"),
                                   {"uid": series_uid}).scalar()
        return None if value is None else int(value)

    def paths_of_series(self, series_uid: str) -> list[Path]:
        """The spool file of every instance of a series."""
        rows = self._conn.execute(text("SELECT path FROM instances WHERE series_uid = :uid ORDER BY path"),
                                  {"uid": series_uid})
        return [Path(row.path) for row in rows]

    def digest_of_series(self, series_uid: str) -> str:
        """A digest of the series' SOP Instance UIDs: new images, new digest."""
        digest = hashlib.sha256(series_uid.encode())
        for row in self._conn.execute(text(
                "SELECT sop_instance_uid FROM instances WHERE series_uid = :uid ORDER BY sop_instance_uid"),
                {"uid": series_uid}):
            digest.update(b"\0" + row.sop_instance_uid.encode())
        return digest.hexdigest()[:32]

    def instance_count(self) -> int:
        """Instances held (``hemex status``)."""
        return int(self._conn.execute(text("SELECT COUNT(*) FROM instances")).scalar_one())

    def studies_received_before(self, cutoff: float) -> list[str]:
        """Studies whose last image arrived before ``cutoff`` (retention)."""
        rows = self._conn.execute(text(
            "SELECT study_uid FROM studies WHERE COALESCE(last_received_at, updated_at) < :cutoff"),
            {"cutoff": cutoff})
        return [row.study_uid for row in rows]



