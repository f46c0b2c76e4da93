"""Which series each open association has stored images of, for the series tracker.

An association that ends with an orderly A-RELEASE tells the tracker which series it
brought and how many images of each, and which series other open associations of this
node are still bringing (``SeriesTracker.association_released``). An aborted or lost
association tells nothing: its series wait their confirm or quiet period.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping

from pynetdicom.events import Event

ReleaseListener = Callable[[Mapping[str, int], Collection[str]], None]


class SeriesPerAssociation:
    """Counts stored images per (association, series); reports each orderly release."""

    def __init__(self, on_release: ReleaseListener) -> None:
        self._on_release = on_release
        self._lock = threading.Lock()
        self._open: dict[int, Counter[str]] = {}

    def stored(self, association: object, series_uid: str) -> None:
        """A new image of ``series_uid`` was stored on ``association``."""
        with self._lock:
            self._open.setdefault(id(association), Counter())[series_uid] += 1

    def released(self, event: Event) -> None:
        """EVT_RELEASED: the peer released the association; tell the listener what it brought."""
        with self._lock:
            delivered = self._open.pop(id(event.assoc), None)
            still_arriving = {uid for counts in self._open.values() for uid in counts}
        if delivered:
            self._on_release(delivered, still_arriving)

    def closed(self, event: Event) -> None:
        """EVT_CONN_CLOSE: forget the association (after an abort, nothing is reported)."""
        with self._lock:
            self._open.pop(id(event.assoc), None)
