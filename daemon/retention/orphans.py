"""Files a crash left half-written: removed when the node starts.

Two kinds: the temporary file of an atomic write (``.<name>.<host>.<pid>.<thread>.tmp``
beside its target, domain/durable_files.py), and the folder in ``data_dir/tmp`` where a
process received objects (pynetdicom writes each as it arrives). Neither was ever
acknowledged, so the sender still has it. Several nodes may share the data directory:
only what belongs to a process of this host that no longer runs is removed.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from daemon.config import Settings
from domain.durable_files import HOST_TAG, ensure_private_dir, is_orphan_temp_file, process_running

log = logging.getLogger(__name__)


def prepare_receive_tmp_dir(settings: Settings) -> Path:
    """This process's folder for objects being received (``data_dir/tmp/<host>.<pid>``),
    after removing those of this host's processes that are gone."""
    root = ensure_private_dir(settings.tmp_dir)
    removed = 0
    for entry in root.iterdir():
        host, _, pid = entry.name.partition(".")
        if host == HOST_TAG and pid.isdigit() and int(pid) != os.getpid() and not process_running(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    if removed:
        log.info("start-up cleanup receive_folders_removed=%d", removed)
    return ensure_private_dir(root / f"{HOST_TAG}.{os.getpid()}")


def remove_orphan_temp_files(settings: Settings) -> int:
    """Remove the temporary files of atomic writes whose process is gone; how many."""
    removed = 0
    for root in (settings.spool_dir, settings.results_dir, settings.data_dir / "hl7"):
        if not root.is_dir():
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                if is_orphan_temp_file(path):
                    path.unlink(missing_ok=True)
                    removed += 1
    if removed:
        log.info("start-up cleanup orphan_temp_files_removed=%d", removed)
    return removed
