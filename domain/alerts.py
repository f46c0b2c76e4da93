"""An alert's life after it is raised: queued, sent, delivered, acknowledged or escalated.

Alerts for one patient that arrive while an earlier one is still unacknowledged join it
(one group, one short code, one acknowledgement link, one escalation chain). A group is
open while its newest alert came after its last acknowledgement.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AlertStep(str, enum.Enum):
    """What happened to an alert group, each stored with its time."""

    QUEUED = "queued"              # recorded, its deliveries queued (one per alert of the group)
    MERGED = "merged"              # a later alert for the same patient joined the open group
    SENT = "sent"                  # the first delivery of an alert was accepted by its peer
    DELIVERED = "delivered"        # every delivery of an alert was accepted by its peer
    ACKNOWLEDGED = "acknowledged"  # someone followed the link (or typed the code)
    ESCALATED = "escalated"        # unacknowledged in time: the next contact was alerted
    EXHAUSTED = "exhausted"        # unacknowledged, and the roster had nobody left


@dataclass(frozen=True)
class AlertEvent:
    """One step of a group, with when it happened and a non-PHI detail (a contact's name,
    a study handle, a channel)."""

    step: AlertStep
    at: float
    detail: str


@dataclass(frozen=True)
class AlertGroup:
    """The alerts of one patient that one acknowledgement answers."""

    ref: str  # random, the payload of the signed acknowledgement token
    short_code: str
    created_at: float
    last_alert_at: float
    acknowledged_at: float | None
    acknowledged_by: str | None
    level: int  # escalation level reached: 0 = first contact
    studies: tuple[str, ...]  # handles of the studies whose alerts joined
    events: tuple[AlertEvent, ...] = ()

    @property
    def open(self) -> bool:
        """True while an alert of the group came after its last acknowledgement."""
        return self.acknowledged_at is None or self.acknowledged_at < self.last_alert_at

    def first(self, step: AlertStep) -> float | None:
        """When ``step`` first happened, or None."""
        return min((e.at for e in self.events if e.step is step), default=None)


@dataclass(frozen=True)
class AlertAcknowledgement:
    """What an alert's files carry so that it can be answered: the group it joins, the
    code staff can type, and the link to the node (None when no public URL is set)."""

    group_ref: str
    short_code: str
    url: str | None
