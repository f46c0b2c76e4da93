"""Freed memory stays with the process when ``memory.retain_freed_mb`` says so (glibc):
a second 300 MB array, allocated in a thread after the first was freed, touches pages
the process already holds (almost no page faults), and without retention it faults
them in again. Each case runs in its own Python process (mallopt is process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon.memory_tuning import retain_freed_memory

pytestmark = pytest.mark.no_database

_PROBE = """
import resource, sys, threading
import numpy as np
from daemon.memory_tuning import retain_freed_memory
print(retain_freed_memory(int(sys.argv[1])))
faults = []
def work():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        array = np.ones((300, 512, 512), np.float32)
        del array
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(faults[0], faults[1])
"""


def _faults(retain_mb: int) -> tuple[str, int, int]:
    result = subprocess.run([sys.executable, "-c", _PROBE, str(retain_mb)], capture_output=True, text=True,
                            check=True, timeout=120)
    switched, faults = result.stdout.splitlines()
    first, second = (int(v) for v in faults.split())
    return switched, first, second


def test_freed_memory_is_reused_without_page_faults() -> None:
    switched, first, second = _faults(1024)
    assert switched == "True"
    assert first > 100 and second < first / 10


def test_without_retention_a_freed_block_goes_back_to_the_kernel() -> None:
    switched, first, second = _faults(0)
    assert switched == "False"
    assert second > first / 2


def test_zero_leaves_the_c_library_alone() -> None:
    assert retain_freed_memory(0) is False
