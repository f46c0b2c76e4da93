"""Queue an alert's deliveries, once per study and alert key, in the caller's transaction.

An alert with an acknowledgement (``AlertFiles.acknowledgement``) is recorded in its
group, step ``queued`` (and ``merged`` when the group had alerts before), each of its
outbox items tied to the group so their delivery becomes a step. With an on-call roster
it also goes to the group's current contact (the first, unless the group escalated
already) of the shift on duty, and its escalation is scheduled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.config import AlertSettings, ContactSettings, Settings, WebhookTarget
from daemon.state.repositories import Repositories
from domain.alerts import AlertStep
from domain.delivery import EMAIL_DESTINATION, Channel, DeliveryRequest
from domain.handles import study_handle
from domain.jobs import JobKind
from domain.oncall import contact_at_level
from domain.report import AlertFiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Roster:
    """The roster as dispatch needs it: the settings, and the local time now."""

    alerts: AlertSettings
    local_now: datetime


def queue_alert(repos: Repositories, study_uid: str, alert: AlertFiles, webhooks: Sequence[WebhookTarget],
                now: float, *, roster: Roster | None = None, broadcast_email: bool = True,
                images_received_at: float | None = None) -> bool:
    """Record ``alert`` for the study and queue one item per webhook and one for e-mail
    (``broadcast_email``: to the configured recipients), and to the roster's contact.

    Returns False, queueing nothing, when the study raised this alert key before.
    """
    ack = alert.acknowledgement
    if not repos.alerts.record_once(study_uid, alert.key, now, ack.group_ref if ack else None, images_received_at):
        return False
    item_key = f"{study_uid}:{alert.key}"
    requests = [DeliveryRequest(Channel.WEBHOOK, target.name, item_key, alert.payload_path, study_uid)
                for target in webhooks]
    if alert.email_path is not None and broadcast_email:
        requests.append(DeliveryRequest(Channel.EMAIL, EMAIL_DESTINATION, item_key, alert.email_path, study_uid))
    for request in requests:
        repos.outbox.enqueue(request, now)
    contact = None
    if ack is not None:
        handle = study_handle(study_uid)
        created = repos.alerts.join_group(ack.group_ref, ack.short_code, now)
        repos.alerts.add_event(ack.group_ref, AlertStep.QUEUED, now, handle, study_uid, alert.key)
        if not created:
            repos.alerts.add_event(ack.group_ref, AlertStep.MERGED, now, handle, study_uid, alert.key)
        _tie(repos, requests, ack.group_ref, study_uid, alert.key, "")
        if roster is not None and roster.alerts.roster:
            group = repos.alerts.group(ack.group_ref)
            level = group.level if group is not None else 0
            name = contact_at_level(roster.alerts.shifts(), roster.local_now, level)
            contact = roster.alerts.contact(name) if name else None
            if contact is None:
                log.warning("alert has no on-call contact now group=%s level=%d", ack.short_code, level)
            else:
                queue_to_contact(repos, contact, study_uid, alert.key, f"{item_key}:{contact.name}",
                                 {"webhook": alert.payload_path, "email": alert.email_path}, ack.group_ref, now)
            due = now + roster.alerts.acknowledgement.escalate_after_s
            repos.jobs.enqueue(JobKind.ESCALATE_ALERT, ack.group_ref, due, now)
    log.info("alert queued study=%s key=%s reasons=%s webhooks=%d email=%s group=%s contact=%s",
             study_handle(study_uid), alert.key, ",".join(alert.reasons), len(webhooks),
             alert.email_path is not None and broadcast_email, ack.short_code if ack else "-",
             contact.name if contact else "-")
    return True


def alert_routing(settings: Settings, images_received_at: float | None, now: float) -> dict[str, Any]:
    """The keyword arguments of ``queue_alert`` that the node's settings decide."""
    return {"roster": Roster(settings.alerts, datetime.fromtimestamp(now)),
            "broadcast_email": bool(settings.alerts.email.recipients),
            "images_received_at": images_received_at}


def queue_to_contact(repos: Repositories, contact: ContactSettings, study_uid: str, alert_key: str,
                     item_key: str, files: dict[str, Path | None], group_ref: str, now: float) -> int:
    """Queue the alert ``files`` (``webhook``: JSON, ``email``: message) to one roster
    contact, over each channel the contact has; returns how many items were queued."""
    requests = []
    payload, message = files.get("webhook"), files.get("email")
    if contact.webhook_url and payload is not None:
        requests.append(DeliveryRequest(Channel.WEBHOOK, contact.destination, item_key, payload, study_uid))
    if contact.email and message is not None:
        requests.append(DeliveryRequest(Channel.EMAIL, contact.destination, item_key, message, study_uid))
    for request in requests:
        repos.outbox.enqueue(request, now)
    _tie(repos, requests, group_ref, study_uid, alert_key, contact.name)
    return len(requests)


def _tie(repos: Repositories, requests: list[DeliveryRequest], group_ref: str, study_uid: str, alert_key: str,
         contact: str) -> None:
    for request in requests:
        outbox_id = repos.outbox.id_of(request)
        if outbox_id is not None:
            repos.alerts.add_delivery(outbox_id, group_ref, study_uid, alert_key, contact)
