"""Group commit: the C-STOREs of concurrent associations share one database commit.

Each association's thread writes its own spool file, then hands the row to record to a
``GroupCommitter`` and waits. The first thread to find no commit running becomes the
leader: it takes every row waiting (its own among them), records them in one
transaction and one commit (one fsync of the database for all of them), and hands each
waiting thread its own result. Threads whose rows arrive while a commit runs wait for the
next one, which carries them all; so the more associations, the more rows per fsync,
instead of one queue of fsyncs behind the database's write lock. A lone association never
waits for anybody: its batch is its own row.

No thread returns before the commit that holds its row has returned, so each C-STORE is
still answered only after its own data is committed (as durably as the level says).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Slot(Generic[Item, Result]):
    """One caller's item; its thread sleeps on ``wake`` until it is done or must lead."""

    item: Item
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    lead: bool = False  # handed the leader's role by the batch before
    result: Result | None = None
    error: BaseException | None = None


@dataclass
class CommitFigures:
    """How many batches were committed and how many items they carried."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0


class GroupCommitter(Generic[Item, Result]):
    """Runs ``run_batch`` on the items of concurrent callers, several at a time.

    At most one batch runs at a time. When it ends, its callers are woken with their
    results and the first caller still waiting (if any) is woken to lead the next batch:
    only the threads concerned wake, never the whole queue.

    Parameters
    ----------
    run_batch
        Records a batch in one transaction; returns one result per item, in order.
    max_batch
        The most items one transaction takes (bounds how long it holds the write lock).
    """

    def __init__(self, run_batch: Callable[[list[Item]], Sequence[Result]], max_batch: int = 64) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Slot[Item, Result]] = []
        self._leader_active = False
        self.figures = CommitFigures()

    def waiting_count(self) -> int:
        """Items waiting for a batch (not yet taken by one)."""
        with self._lock:
            return len(self._waiting)

    def leader_active(self) -> bool:
        """True while a batch is being run."""
        with self._lock:
            return self._leader_active

    def submit(self, item: Item) -> Result:
        """Record ``item`` (with whatever else is waiting) and return its result.

        Raises
        ------
        Exception
            Whatever ``run_batch`` raised for this item. A batch of several that fails is
            run again item by item, so one bad item fails alone.
        """
        slot: _Slot[Item, Result] = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            slot.lead = not self._leader_active
            self._leader_active = True
        if not slot.lead:
            slot.wake.wait()
        while not slot.done:  # leading: ours is first in the queue, so the first batch takes it
            with self._lock:
                batch, self._waiting = self._waiting[:self._max_batch], self._waiting[self._max_batch:]
            try:
                self._run(batch)
            finally:
                self._finish(batch)
        return self._outcome(slot)

    def _finish(self, batch: list[_Slot[Item, Result]]) -> None:
        """Wake the batch's callers, and hand the leader's role to the next waiting one."""
        with self._lock:
            for slot in batch:
                if not slot.done:  # the leader itself was interrupted
                    slot.error, slot.done = RuntimeError("the commit was interrupted"), True
            if self._waiting:
                self._waiting[0].lead = True
                self._waiting[0].wake.set()
            else:
                self._leader_active = False
        for slot in batch:
            slot.wake.set()

    def _run(self, batch: list[_Slot[Item, Result]]) -> None:
        """Run one batch; every slot in it ends done, with its result or its error."""
        try:
            results = self._run_batch([slot.item for slot in batch])
        except Exception as exc:  # noqa: BLE001 - not handled here: re-raised in the caller it belongs to
            if len(batch) > 1:
                for slot in batch:  # find the item that failed; the others still commit
                    self._run([slot])
                return
            batch[0].error = exc
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
            self.figures.batches += 1  # only the leader writes the figures
            self.figures.items += len(batch)
            self.figures.largest_batch = max(self.figures.largest_batch, len(batch))
        for slot in batch:
            slot.done = True

    @staticmethod
    def _outcome(slot: _Slot[Item, Result]) -> Result:
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]  # done without an error: the result is set
