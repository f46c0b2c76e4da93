"""Queue an alert's deliveries, once per study and alert key, in the caller's transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from daemon.config import WebhookTarget
from daemon.state.repositories import Repositories
from domain.delivery import EMAIL_DESTINATION, Channel, DeliveryRequest
from domain.handles import study_handle
from domain.report import AlertFiles

log = logging.getLogger(__name__)


def queue_alert(repos: Repositories, study_uid: str, alert: AlertFiles, webhooks: Sequence[WebhookTarget],
                now: float) -> bool:
    """Record ``alert`` for the study and queue one item per webhook and one for e-mail.

    Returns False, queueing nothing, when the study raised this alert key before.
    """
    if not repos.alerts.record_once(study_uid, alert.key, now):
        return False
    item_key = f"{study_uid}:{alert.key}"
    for target in webhooks:
        repos.outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, target.name, item_key, alert.payload_path, study_uid),
                             now)
    if alert.email_path is not None:
        repos.outbox.enqueue(DeliveryRequest(Channel.EMAIL, EMAIL_DESTINATION, item_key, alert.email_path,
                                             study_uid), now)
    log.info("alert queued study=%s key=%s reasons=%s webhooks=%d email=%s", study_handle(study_uid), alert.key,
             ",".join(alert.reasons), len(webhooks), alert.email_path is not None)
    return True
