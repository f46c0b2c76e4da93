"""kill -9 of the listener process while a scanner sends: nothing acknowledged is lost.

Runs bench/kill_loop.py with 3 kills on synthetic tiny CT slices. The process under test
is the node's receive path alone (tests/support/dicom_listener.py); the whole node is
killed in tests/test_node_crash_safety.py.
"""

from __future__ import annotations

from pathlib import Path

from bench.kill_loop import kill_loop


def test_every_acknowledged_instance_survives_kill_9(tmp_path: Path) -> None:
    tally = kill_loop(kills=3, images=150, seed=7, work=tmp_path)
    assert tally.kills == 3
    assert tally.kills_mid_send >= 1  # at least one kill landed mid-series
    assert tally.lost == [] and tally.unreadable == []
    assert len(tally.acknowledged) == 150  # the re-sends after restart completed the series
