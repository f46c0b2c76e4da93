"""Durable storage of received instances: spool file + database row, then acknowledge."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from daemon.state.database import Database
from domain.durable_files import ensure_private_dir, free_bytes, write_atomically
from domain.errors import InvalidInputError, StorageFullError
from domain.handles import study_handle

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes of a received instance that the node indexes."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    modality: str
    series_description: str
    patient_id: str | None
    issuer_of_patient_id: str | None
    accession_number: str | None
    study_datetime: str | None
    expected_images: int | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> InstanceHeader:
        """Read and check the identifying attributes; InvalidInputError if unusable."""
        uids = {}
        for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
            value = str(ds.get(keyword, "") or "").strip()
            if not value or len(value) > 64 or not _UID.match(value):
                raise InvalidInputError(f"missing or invalid {keyword}")
            uids[keyword] = value
        expected = ds.get("ImagesInAcquisition")
        study_date = str(ds.get("StudyDate", "") or "")
        study_time = str(ds.get("StudyTime", "") or "")
        return cls(
            sop_instance_uid=uids["SOPInstanceUID"],
            sop_class_uid=uids["SOPClassUID"],
            study_uid=uids["StudyInstanceUID"],
            series_uid=uids["SeriesInstanceUID"],
            modality=str(ds.get("Modality", "") or ""),
            series_description=str(ds.get("SeriesDescription", "") or ""),
            patient_id=str(ds.PatientID) if ds.get("PatientID") else None,
            issuer_of_patient_id=str(ds.IssuerOfPatientID) if ds.get("IssuerOfPatientID") else None,
            accession_number=str(ds.AccessionNumber) if ds.get("AccessionNumber") else None,
            study_datetime=(study_date + study_time) or None,
            expected_images=int(expected) if expected not in (None, "") and int(expected) > 0 else None,
        )


@dataclass(frozen=True)
class StoreOutcome:
    header: InstanceHeader
    path: Path
    duplicate: bool


class InstanceStore:
    """Writes each instance to ``spool_dir/<study>/<series>/<sop>.dcm`` and records it.

    The file is written atomically (temp, fsync, rename) and the database row committed
    before ``store`` returns, so a success status sent after it is never a lie.
    """

    def __init__(
        self,
        db: Database,
        spool_dir: Path,
        min_free_bytes: int,
        on_stored: Callable[[InstanceHeader], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._spool_dir = spool_dir
        self._min_free_bytes = min_free_bytes
        self._on_stored = on_stored
        self._clock = clock
        ensure_private_dir(spool_dir)

    def store(self, header: InstanceHeader, encoded_file: bytes, calling_ae_title: str) -> StoreOutcome:
        """Persist one instance; a SOP Instance UID already held is stored once.

        Raises
        ------
        StorageFullError
            Free space below the configured minimum, or the write hit a full disk.
        """
        path = self._spool_dir / header.study_uid / header.series_uid / f"{header.sop_instance_uid}.dcm"
        if self._db.query(
            "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (header.sop_instance_uid,)
        ):
            log.info("instance duplicate study=%s: already stored, acknowledged", study_handle(header.study_uid))
            return StoreOutcome(header, path, duplicate=True)
        if free_bytes(self._spool_dir) - len(encoded_file) < self._min_free_bytes:
            raise StorageFullError("free disk space below the configured minimum")
        write_atomically(path, encoded_file)
        now = self._clock()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO studies(study_uid, handle, patient_id, issuer_of_patient_id,"
                " accession_number, study_datetime, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(study_uid) DO UPDATE SET updated_at = excluded.updated_at",
                (header.study_uid, study_handle(header.study_uid), header.patient_id,
                 header.issuer_of_patient_id, header.accession_number, header.study_datetime, now, now),
            )
            conn.execute(
                "INSERT INTO series(series_uid, study_uid, modality, description, expected_images,"
                " first_received_at, last_received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(series_uid) DO NOTHING",
                (header.series_uid, header.study_uid, header.modality, header.series_description,
                 header.expected_images, now, now),
            )
            inserted = conn.execute(
                "INSERT OR IGNORE INTO instances(sop_instance_uid, sop_class_uid, series_uid, study_uid,"
                " path, size_bytes, calling_ae_title, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (header.sop_instance_uid, header.sop_class_uid, header.series_uid, header.study_uid,
                 str(path), len(encoded_file), calling_ae_title, now),
            ).rowcount
            if inserted:
                conn.execute(
                    "UPDATE series SET instance_count = instance_count + 1, last_received_at = ?, state = 'receiving',"
                    " expected_images = COALESCE(expected_images, ?) WHERE series_uid = ?",
                    (now, header.expected_images, header.series_uid),
                )
        if self._on_stored is not None and inserted:
            self._on_stored(header)
        return StoreOutcome(header, path, duplicate=not inserted)


__all__ = ["InstanceHeader", "InstanceStore", "StorageFullError", "StoreOutcome"]
