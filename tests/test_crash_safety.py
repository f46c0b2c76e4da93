"""kill -9 of the listener process while a scanner sends: nothing acknowledged is lost.

Runs bench/kill_loop.py with 3 kills on synthetic tiny CT slices, under each
``dicom.durability`` level (both promise to survive the death of the process). The
process under test is the node's receive path alone (tests/support/dicom_listener.py);
the whole node is killed in tests/test_node_crash_safety.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.kill_loop import kill_loop


@pytest.mark.parametrize("durability", ["power-loss", "process-crash"])
def test_every_acknowledged_instance_survives_kill_9(tmp_path: Path, durability: str) -> None:
    tally = kill_loop(kills=3, images=150, seed=7, work=tmp_path, durability=durability)
    assert tally.kills == 3
    assert tally.kills_mid_send >= 1  # at least one kill landed mid-series
    assert tally.lost == [] and tally.unreadable == []
    assert len(tally.acknowledged) == 150  # the re-sends after restart completed the series
