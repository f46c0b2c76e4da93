"""The thread that runs delivery passes: at every poll interval, and at once when dispatch
queued new items."""

from __future__ import annotations

import logging
import threading

from daemon.deliver.outbox import Outbox
from daemon.jobs.wakeup import Wakeup

log = logging.getLogger(__name__)


class OutboxWorker:
    """Runs ``outbox.deliver_due`` in its own thread until stopped."""

    def __init__(self, outbox: Outbox, wakeup: Wakeup, poll_interval_s: float) -> None:
        self._outbox = outbox
        self._wakeup = wakeup
        self._poll_interval_s = poll_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hemex-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Finish the pass in hand, then stop."""
        self._stop.set()
        self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._outbox.deliver_due()
            self._wakeup.wait(self._poll_interval_s)
