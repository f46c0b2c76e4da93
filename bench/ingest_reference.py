"""The references an ingest rate is judged against, measured in the same run.

- dcmtk's storescp receiving the same files (its work: the DICOM protocol and writing the
  files, no fsync);
- the disk's fsync floor: a loop that, per image, writes the same bytes to a temp file,
  fsyncs it, renames it into place and fsyncs the folder (what ``dicom.durability =
  "power-loss"`` needs of the disk, and nothing else);
- their combination, a receiver that would do storescp's work and then the floor's
  fsyncs: 1 / (1/storescp + 1/floor) images/s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def fsync_floor(files: list[Path], folder: Path) -> float:
    """Images/s of writing each file's bytes durably into ``folder`` (temp, fsync, rename,
    fsync of the folder), one after the other."""
    folder.mkdir(parents=True, exist_ok=True)
    payloads = [path.read_bytes() for path in files]  # read first: the floor is the writes only
    start = time.perf_counter()
    for index, data in enumerate(payloads):
        tmp, target = folder / f".{index}.tmp", folder / f"{index}.dcm"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return len(payloads) / (time.perf_counter() - start)


def settle() -> None:
    """Write back what earlier runs left in the page cache before the next one is timed, so
    that no receiver's fsyncs wait behind another's dirty data (``os.sync``)."""
    os.sync()


def combined_rate(storescp_per_s: float, floor_per_s: float) -> float:
    """Images/s of a receiver doing storescp's work plus the floor's fsyncs per image."""
    return 1.0 / (1.0 / storescp_per_s + 1.0 / floor_per_s)
