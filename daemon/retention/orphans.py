"""Files a crash left half-written: removed when the node starts.

Two kinds: the temporary file of an atomic write (``.<name>.<pid>.<thread>.tmp`` beside
its target, domain/durable_files.py), and objects pynetdicom was still receiving into the
node's tmp folder. Neither was ever acknowledged, so the sender still has it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from daemon.config import Settings
from domain.durable_files import ensure_private_dir, is_orphan_temp_file

log = logging.getLogger(__name__)


def empty_tmp_dir(settings: Settings) -> int:
    """Empty the node's tmp folder (call before the listeners open); how many entries went."""
    folder = ensure_private_dir(settings.tmp_dir)
    removed = 0
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("start-up cleanup tmp_entries_removed=%d", removed)
    return removed


def remove_orphan_temp_files(settings: Settings) -> int:
    """Remove the temporary files of atomic writes that another process left (by its pid in
    the name, so a write of this process running meanwhile is never touched)."""
    own = str(os.getpid())
    removed = 0
    for root in (settings.spool_dir, settings.results_dir, settings.data_dir / "hl7"):
        if not root.is_dir():
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                if is_orphan_temp_file(path) and name.rsplit(".", 3)[1] != own:
                    path.unlink(missing_ok=True)
                    removed += 1
    if removed:
        log.info("start-up cleanup orphan_temp_files_removed=%d", removed)
    return removed
