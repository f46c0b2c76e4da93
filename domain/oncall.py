"""Who is on call: shifts by weekday and time of day, each with contacts in escalation order.

A shift covers its ``days`` from ``start`` to ``end`` (local time). A shift whose end is
not after its start runs through midnight and belongs to the day it starts on: a Friday
18:00-08:00 shift covers Friday evening and Saturday morning. The first shift (in
configured order) that covers a moment is the one on duty then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Shift:
    """One on-call shift: the weekdays it starts on (0 = Monday), its hours, its contacts
    in escalation order (the first is alerted, the next after each unanswered wait)."""

    days: frozenset[int]
    start: time
    end: time
    contacts: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.contacts:
            raise ValueError("a shift needs at least one contact")
        if not self.days or not self.days <= set(range(7)):
            raise ValueError("a shift's days are weekdays 0 (Monday) to 6 (Sunday)")

    def covers(self, when: datetime) -> bool:
        """True when ``when`` (naive local time) lies in this shift."""
        clock = when.time()
        if self.start < self.end:
            return when.weekday() in self.days and self.start <= clock < self.end
        # Through midnight (or round the clock when start == end).
        if when.weekday() in self.days and clock >= self.start:
            return True
        previous_day = (when - timedelta(days=1)).weekday()
        return previous_day in self.days and clock < self.end


def parse_weekday(name: str) -> int:
    """``mon`` .. ``sun`` (any case, or the full English name) -> 0 .. 6."""
    key = name.strip().lower()[:3]
    if key not in WEEKDAYS:
        raise ValueError(f"not a weekday: {name!r} (use mon, tue, wed, thu, fri, sat, sun)")
    return WEEKDAYS.index(key)


def on_duty(shifts: Sequence[Shift], when: datetime) -> Shift | None:
    """The shift on duty at ``when``, or None when no shift covers it."""
    return next((shift for shift in shifts if shift.covers(when)), None)


def contact_at_level(shifts: Sequence[Shift], when: datetime, level: int) -> str | None:
    """The contact to alert at escalation ``level`` (0 = first) at ``when``: the
    ``level``-th contact of the shift on duty then; None when no shift covers ``when``
    or its chain has fewer contacts (the escalation has nobody left to go to)."""
    shift = on_duty(shifts, when)
    if shift is None or level >= len(shift.contacts):
        return None
    return shift.contacts[level]
