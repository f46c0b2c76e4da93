"""The group committer: concurrent callers share one batch, each gets its own result.

The batches are made deterministic by a ``run_batch`` that holds its first call until the
other callers are waiting (threads, no sleeps); the database side is in
tests/test_durability.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from daemon.receive.group_commit import GroupCommitter

pytestmark = pytest.mark.no_database


class HeldFirstBatch:
    """Records each batch; the first waits until ``waiting`` more callers queued behind it."""

    def __init__(self, committer_ref: list[GroupCommitter[int, int]], waiting: int) -> None:
        self.batches: list[list[int]] = []
        self._committer_ref = committer_ref
        self._waiting = waiting

    def __call__(self, items: list[int]) -> list[int]:
        if not self.batches:
            committer = self._committer_ref[0]
            assert wait_for(lambda: committer.waiting_count() >= self._waiting)
        self.batches.append(list(items))
        return [item * 10 for item in items]


def wait_for(condition: object, timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` (a callable) on a condition variable's clock, not with sleeps."""
    event = threading.Event()
    for _ in range(int(timeout_s * 200)):
        if condition():  # type: ignore[operator]
            return True
        event.wait(0.005)
    return False


def test_callers_arriving_during_a_commit_share_the_next_one() -> None:
    ref: list[GroupCommitter[int, int]] = []
    run = HeldFirstBatch(ref, waiting=7)
    committer: GroupCommitter[int, int] = GroupCommitter(run)
    ref.append(committer)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(committer.submit, 0)
        assert wait_for(lambda: len(run.batches) == 0 and committer.leader_active())
        rest = [pool.submit(committer.submit, item) for item in range(1, 8)]
        assert first.result(10) == 0
        assert [future.result(10) for future in rest] == [item * 10 for item in range(1, 8)]
    assert run.batches[0] == [0]
    assert sorted(run.batches[1]) == list(range(1, 8)) and len(run.batches) == 2  # one commit for seven
    assert (committer.figures.batches, committer.figures.items, committer.figures.largest_batch) == (2, 8, 7)


def test_a_lone_caller_commits_at_once() -> None:
    batches: list[list[int]] = []
    committer: GroupCommitter[int, int] = GroupCommitter(lambda items: batches.append(items) or items)
    assert [committer.submit(item) for item in range(3)] == [0, 1, 2]
    assert batches == [[0], [1], [2]]


def test_batches_are_bounded() -> None:
    ref: list[GroupCommitter[int, int]] = []
    run = HeldFirstBatch(ref, waiting=9)
    committer: GroupCommitter[int, int] = GroupCommitter(run, max_batch=4)
    ref.append(committer)
    with ThreadPoolExecutor(10) as pool:
        first = pool.submit(committer.submit, 0)
        assert wait_for(committer.leader_active)
        rest = [pool.submit(committer.submit, item) for item in range(1, 10)]
        assert [f.result(10) for f in [first, *rest]] == [item * 10 for item in range(10)]
    assert [len(batch) for batch in run.batches] == [1, 4, 4, 1]


class FailsOn:
    """A batch fails when it holds ``bad``; run alone, only ``bad`` fails."""

    def __init__(self, committer_ref: list[GroupCommitter[int, int]], bad: int) -> None:
        self.inner = HeldFirstBatch(committer_ref, waiting=3)
        self.bad = bad

    def __call__(self, items: list[int]) -> list[int]:
        results = self.inner(items)
        if self.bad in items:
            raise ValueError(f"item {self.bad} cannot be recorded")
        return results


def test_one_failing_item_fails_alone() -> None:
    ref: list[GroupCommitter[int, int]] = []
    run = FailsOn(ref, bad=2)
    committer: GroupCommitter[int, int] = GroupCommitter(run)
    ref.append(committer)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(committer.submit, 0)
        assert wait_for(committer.leader_active)
        rest = {item: pool.submit(committer.submit, item) for item in (1, 2, 3)}
        assert first.result(10) == 0
        assert rest[1].result(10) == 10 and rest[3].result(10) == 30
        with pytest.raises(ValueError, match="item 2"):
            rest[2].result(10)
    # the shared batch failed, then each of its items ran on its own
    assert sorted(map(sorted, run.inner.batches)) == [[0], [1], [1, 2, 3], [2], [3]]
