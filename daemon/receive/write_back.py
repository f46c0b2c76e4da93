"""The background sync of ``dicom.durability = "process-crash"``: written, then durable soon.

With that level a C-STORE is answered once its spool file is renamed into place and its
row committed, both in the operating system's hands but not yet on disk. This thread
makes them durable in batches: every ``interval_s`` in which something was written it
syncs each file system that holds the spool or the SQLite database (one ``syncfs`` each,
``domain.durable_files.sync_file_system``), so an acknowledged instance is on disk at
most one interval plus one sync after its answer. A power cut inside that window may lose
it; the death of the process never does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from domain.durable_files import sync_file_system

log = logging.getLogger(__name__)


class WriteBackSync:
    """Syncs the file systems of ``folders`` every ``interval_s`` after writes.

    Parameters
    ----------
    folders
        Folders whose file systems receive the writes (one sync per file system).
    interval_s
        The longest a noted write waits before its sync starts.
    """

    def __init__(self, folders: list[Path], interval_s: float) -> None:
        by_device: dict[int, Path] = {}
        for folder in folders:
            by_device.setdefault(os.stat(folder).st_dev, folder)
        self._folders = list(by_device.values())
        self._interval_s = interval_s
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.syncs = 0  # completed syncs (a figure for tests and the bench)
        self.last_sync_at: float | None = None

    def note_written(self) -> None:
        """Something was written that must reach the disk within the interval."""
        self._dirty.set()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="write-back-sync", daemon=True)
                    self._thread.start()

    def sync_now(self) -> None:
        """Sync at once what was written (a clean stop does this last)."""
        self._dirty.clear()
        for folder in self._folders:
            try:
                sync_file_system(folder)
            except OSError as exc:
                # The answers went out already: all that is left is to say it loudly.
                log.error("write-back sync failed folder=%s error=%s: instances acknowledged in the last"
                          " interval may not be on disk", folder, exc)
        self.syncs += 1
        self.last_sync_at = time.time()

    def close(self) -> None:
        """Stop the thread after a last sync of anything written."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._dirty.is_set():
            self.sync_now()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if self._dirty.is_set():
                self.sync_now()
