"""Keep freed memory in the process for the next study (glibc's malloc).

An analysis allocates and frees a few hundred MB of arrays per study (the HU volume,
its smoothed copy, masks). glibc hands every block over 32 MB back to the kernel when
it is freed, and on a virtual machine whose host reclaims the guest's free memory
(balloon, free page reporting) the next study faults it all in again through the
host: on the development VM, 1.6-1.9 s of kernel time per 300-slice analysis after a
few idle seconds, against 0.6 s with the memory kept (bench/bench_ingest_to_report.py:
last image -> SR median 4.9 -> 4.1 s). ``retain_freed_memory`` asks glibc to serve
blocks up to the limit from its heap, to keep up to the limit of freed heap, and to
give all threads one arena (a thread's own arena cannot hold blocks over 64 MB). The
node's resident memory then stays near its peak between studies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1


def retain_freed_memory(limit_mb: int) -> bool:
    """Keep up to ``limit_mb`` of freed memory for reuse; False when off (0) or the C
    library has no ``mallopt`` (not glibc). Call before the node starts its threads."""
    if limit_mb <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        log.info("memory retention unavailable: the C library has no mallopt (not glibc)")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    limit = min(limit_mb * 1024 * 1024, _INT_MAX)
    accepted = [mallopt(parameter, value) == 1 for parameter, value in
                ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, limit), (_M_TRIM_THRESHOLD, limit))]
    if not all(accepted):
        log.warning("memory retention partly refused by the C library (arena, mmap, trim: %s)", accepted)
        return False
    log.info("memory retention on: freed blocks up to %d MB stay with the process", limit // (1024 * 1024))
    return True
