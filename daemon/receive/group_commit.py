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
    item: Item
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None


@dataclass
class CommitFigures:
    """How many batches were committed and how many items they carried."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class GroupCommitter(Generic[Item, Result]):
    """Runs ``run_batch`` on the items of concurrent callers, several at a time.

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
        self._condition = threading.Condition()
        self._waiting: list[_Slot[Item, Result]] = []
        self._leader_active = False
        self.figures = CommitFigures()

    def waiting_count(self) -> int:
        """Items waiting for a batch (not yet taken by one)."""
        with self._condition:
            return len(self._waiting)

    def leader_active(self) -> bool:
        """True while a batch is being run."""
        with self._condition:
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
        with self._condition:
            self._waiting.append(slot)
        while True:
            with self._condition:
                while self._leader_active and not slot.done:
                    self._condition.wait()
                if slot.done:
                    return self._outcome(slot)
                self._leader_active = True
                batch, self._waiting = self._waiting[:self._max_batch], self._waiting[self._max_batch:]
            try:
                self._run(batch)
            finally:
                with self._condition:
                    for taken in batch:
                        if not taken.done:  # the leader itself was interrupted
                            taken.error = RuntimeError("the commit was interrupted")
                            taken.done = True
                    self._leader_active = False
                    self._condition.notify_all()

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
            with self.figures.lock:
                self.figures.batches += 1
                self.figures.items += len(batch)
                self.figures.largest_batch = max(self.figures.largest_batch, len(batch))
        with self._condition:
            for slot in batch:
                slot.done = True

    @staticmethod
    def _outcome(slot: _Slot[Item, Result]) -> Result:
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]  # done without an error: the result is set
