"""How a stage that queued work tells the worker to look now instead of at its next poll."""

from __future__ import annotations

import threading


class Wakeup:
    """A signal shared by producers of work (``notify``) and the worker that waits for it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        """Work was queued: the waiting worker looks now."""
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a notification; True when one came (and clear it)."""
        woken = self._event.wait(timeout_s)
        self._event.clear()
        return woken
