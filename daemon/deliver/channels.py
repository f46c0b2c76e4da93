"""The outbox's channels, built from the configuration (names are the outbox's ``channel``)."""

from __future__ import annotations

from daemon.config import Settings
from daemon.deliver.channel import DeliveryChannel, SingleItemChannel
from daemon.deliver.dicom_sender import DicomStoreChannel
from daemon.deliver.email_sender import EmailChannel
from daemon.deliver.hl7_sender import Hl7MllpChannel
from daemon.deliver.webhook_sender import WebhookChannel
from domain.delivery import ADMIN_DESTINATION, Channel


def build_channels(settings: Settings) -> dict[str, DeliveryChannel | SingleItemChannel]:
    """One channel per kind of delivery the configuration enables.

    Items queued for a channel that is absent here become dead letters naming it, so a
    configuration mistake is visible rather than retried for ever.
    """
    alerts = settings.alerts
    contact_hooks = [target for target in (c.webhook_target() for c in alerts.contacts) if target is not None]
    addresses = {c.destination: c.email for c in alerts.contacts if c.email}
    addresses[ADMIN_DESTINATION] = list(settings.performance.admin_email)
    channels: dict[str, DeliveryChannel | SingleItemChannel] = {
        Channel.DICOM.value: DicomStoreChannel(settings.destinations),
        Channel.WEBHOOK.value: WebhookChannel([*alerts.webhooks, *contact_hooks]),
        Channel.EMAIL.value: EmailChannel(alerts.email, addresses=addresses),
    }
    if settings.hl7.enabled and settings.hl7.outbound_host:
        channels[Channel.HL7.value] = Hl7MllpChannel.from_settings(settings.hl7)
    return channels
