"""Outbound deliveries: each report object, ORU and alert is one item of the outbox."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class Channel(str, enum.Enum):
    """A way of sending; each has one sender in daemon/deliver."""

    DICOM = "dicom"
    HL7 = "hl7"
    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryState(str, enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # failed for good: a dead letter, retried only on request


# The one outbound HL7 endpoint ([hl7] outbound_host/port) and the one e-mail destination.
HL7_DESTINATION = "ehr"
EMAIL_DESTINATION = "email"
# The node's administrator ([performance] admin_email): drift warnings.
ADMIN_DESTINATION = "admin"


@dataclass(frozen=True)
class DeliveryRequest:
    """One item to queue: send the file at ``path`` to ``destination`` over ``channel``.

    ``item_key`` makes it unique per destination (SOP Instance UID, HL7 control id, alert
    key), so queueing it again never sends it twice.
    """

    channel: Channel
    destination: str
    item_key: str
    path: Path
    study_uid: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One outbox item as stored."""

    id: int
    channel: str
    destination: str
    item_key: str
    path: Path
    study_uid: str | None
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    delivered_at: float | None
