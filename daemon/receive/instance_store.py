"""Durable storage of received instances: spool file + database rows, then acknowledge."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daemon.assemble.series_tracker import SeriesTracker
from daemon.receive.group_commit import GroupCommitter
from daemon.receive.write_back import WriteBackSync
from daemon.state.database import Database
from daemon.state.image_repository import ArrivedInstance
from domain.durable_files import FileTail, ensure_private_dir, free_bytes, write_atomically
from domain.errors import StorageFullError
from domain.handles import study_handle
from domain.study import ReceivedInstance, SeriesProgress, StudyEvent

log = logging.getLogger(__name__)

Durability = Literal["power-loss", "process-crash"]


@dataclass(frozen=True)
class StoreOutcome:
    instance: ReceivedInstance
    path: Path
    duplicate: bool


class InstanceStore:
    """Writes each instance to ``spool_dir/<study>/<series>/<sop>.dcm`` and records it.

    The file is written atomically (temp file, rename) and its row committed before
    ``store`` returns, so a success status sent after it is never a lie; ``durability``
    says what it survives. ``"power-loss"``: the file is fsynced before the rename, its
    folder after it, and the row's commit is durable. ``"process-crash"``: nothing waits
    for the disk; ``WriteBackSync`` syncs within ``write_back_interval_s``. The rows of
    concurrent associations are committed together (``GroupCommitter``). The series
    tracker hears of each new instance after the commit.
    """

    def __init__(self, db: Database, spool_dir: Path, min_free_bytes: int, tracker: SeriesTracker,
                 clock: Callable[[], float] = time.time, *, durability: Durability = "power-loss",
                 write_back_interval_s: float = 1.0) -> None:
        self._db = db
        self._spool_dir = spool_dir
        self._min_free_bytes = min_free_bytes
        self._tracker = tracker
        self._clock = clock
        self._durable = durability == "power-loss"
        ensure_private_dir(spool_dir)
        self.commits: GroupCommitter[ArrivedInstance, SeriesProgress | None] = GroupCommitter(self._record)
        self.write_back: WriteBackSync | None = None
        if not self._durable:
            folders = [spool_dir] if db.path is None else [spool_dir, db.path.parent]
            self.write_back = WriteBackSync(folders, write_back_interval_s)

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
        # Only a file already at this name can be a duplicate worth not rewriting (the
        # database is asked then, not for every instance); a SOP Instance UID held under
        # another study or series is found by the insert itself, below.
        if path.exists():
            with self._db.reading() as repos:
                if repos.images.holds(instance.sop_instance_uid):
                    return self._duplicate(instance, path)
        size = len(encoded_file) if isinstance(encoded_file, bytes) else encoded_file.size
        if free_bytes(self._spool_dir) - size < self._min_free_bytes:
            raise StorageFullError("free disk space below the configured minimum")
        write_atomically(path, encoded_file, durable=self._durable)
        if self.write_back is not None:
            self.write_back.note_written()
        progress = self.commits.submit(ArrivedInstance(instance, path, size, calling_ae_title))
        if progress is None:
            with self._db.reading() as repos:
                held_path = repos.images.path_of(instance.sop_instance_uid)
            if held_path != path:
                path.unlink(missing_ok=True)  # the row names the first copy; this one is nobody's
            return self._duplicate(instance, path)
        self._tracker.instance_stored(progress)
        return StoreOutcome(instance, path, duplicate=False)

    @staticmethod
    def _duplicate(instance: ReceivedInstance, path: Path) -> StoreOutcome:
        log.info("instance duplicate study=%s: already stored, acknowledged", study_handle(instance.study_uid))
        return StoreOutcome(instance, path, duplicate=True)

    def close(self) -> None:
        """Sync what the write-back has not synced yet (a clean stop)."""
        if self.write_back is not None:
            self.write_back.close()

    def _record(self, arrivals: list[ArrivedInstance]) -> list[SeriesProgress | None]:
        """One transaction for the rows of several instances (the group commit's batch)."""
        now = self._clock()
        with self._db.transaction(durable=self._durable) as repos:
            progress = repos.images.record_many(arrivals, now, recheck_at=self._tracker.recheck_at(now))
            for study_uid in sorted({p.study_uid for p in progress if p is not None}):
                repos.studies.record_event(study_uid, StudyEvent.IMAGES_ARRIVED, now)
        if self.write_back is not None:
            self.write_back.note_written()  # the database's file system too
        return progress
