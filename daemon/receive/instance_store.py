"""Durable storage of received instances: spool file + database rows, then acknowledge."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.assemble.series_tracker import SeriesTracker
from daemon.state.database import Database
from domain.durable_files import FileTail, ensure_private_dir, free_bytes, write_atomically
from domain.errors import StorageFullError
from domain.handles import study_handle
from domain.study import ReceivedInstance, StudyEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreOutcome:
    instance: ReceivedInstance
    path: Path
    duplicate: bool


class InstanceStore:
    """Writes each instance to ``spool_dir/<study>/<series>/<sop>.dcm`` and records it.

    The file is written atomically (temp, fsync, rename) and the rows committed before
    ``store`` returns, so a success status sent after it is never a lie. The series
    tracker hears of each new instance after the commit.
    """

    def __init__(self, db: Database, spool_dir: Path, min_free_bytes: int, tracker: SeriesTracker,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._spool_dir = spool_dir
        self._min_free_bytes = min_free_bytes
        self._tracker = tracker
        self._clock = clock
        ensure_private_dir(spool_dir)

    def store(self, instance: ReceivedInstance, encoded_file: bytes | FileTail, calling_ae_title: str) -> StoreOutcome:
        """Persist one instance; a SOP Instance UID already held is stored once.

        ``encoded_file`` is the DICOM file, or its file meta and the received data set on
        disk (copied in chunks: a large object is never held in memory).

        Raises
        ------
        StorageFullError
            Free space below the configured minimum, or the write hit a full disk.
        """
        path = self._spool_dir / instance.study_uid / instance.series_uid / f"{instance.sop_instance_uid}.dcm"
        with self._db.reading() as repos:
            held = repos.images.holds(instance.sop_instance_uid)
        if held:
            log.info("instance duplicate study=%s: already stored, acknowledged", study_handle(instance.study_uid))
            return StoreOutcome(instance, path, duplicate=True)
        size = len(encoded_file) if isinstance(encoded_file, bytes) else encoded_file.size
        if free_bytes(self._spool_dir) - size < self._min_free_bytes:
            raise StorageFullError("free disk space below the configured minimum")
        write_atomically(path, encoded_file)
        now = self._clock()
        with self._db.transaction() as repos:
            progress = repos.images.record(instance, path, size, calling_ae_title, now,
                                           recheck_at=self._tracker.recheck_at(now))
            if progress is not None:
                repos.studies.record_event(instance.study_uid, StudyEvent.IMAGES_ARRIVED, now)
        if progress is not None:
            self._tracker.instance_stored(progress)
        return StoreOutcome(instance, path, duplicate=progress is None)
