"""The outbox's channels, built from the configuration (names are the outbox's ``channel``)."""

from __future__ import annotations

from daemon.config import Settings, masked_url
from daemon.deliver.channel import DeliveryChannel, SingleItemChannel
from daemon.deliver.dicom_sender import DicomStoreChannel
from daemon.deliver.email_sender import EmailChannel
from daemon.deliver.hl7_sender import Hl7MllpChannel
from daemon.deliver.webhook_sender import WebhookChannel
from domain.delivery import ADMIN_DESTINATION, EMAIL_DESTINATION, HL7_DESTINATION, Channel


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


def delivery_endpoints(settings: Settings) -> dict[tuple[str, str], str]:
    """(channel, destination name) -> the endpoint it names, as the audit log records it
    (webhook URLs with their secrets masked)."""
    alerts = settings.alerts
    endpoints = {(Channel.DICOM.value, d.name): f"{d.ae_title}@{d.host}:{d.port}" for d in settings.destinations}
    endpoints.update({(Channel.WEBHOOK.value, w.name): masked_url(w.url) for w in alerts.webhooks})
    email = alerts.email
    smtp = f"smtp://{email.smtp_host}:{email.smtp_port}"
    if email.enabled:
        endpoints[(Channel.EMAIL.value, EMAIL_DESTINATION)] = f"{smtp} to {', '.join(email.recipients)}"
    for contact in alerts.contacts:
        if contact.webhook_url:
            endpoints[(Channel.WEBHOOK.value, contact.destination)] = masked_url(contact.webhook_url)
        if contact.email:
            endpoints[(Channel.EMAIL.value, contact.destination)] = f"{smtp} to {', '.join(contact.email)}"
    if settings.performance.admin_email:
        endpoints[(Channel.EMAIL.value, ADMIN_DESTINATION)] = f"{smtp} to {', '.join(settings.performance.admin_email)}"
    hl7 = settings.hl7
    if hl7.enabled and hl7.outbound_host:
        scheme = "mllp+tls" if hl7.outbound_tls_ca else "mllp"
        endpoints[(Channel.HL7.value, HL7_DESTINATION)] = f"{scheme}://{hl7.outbound_host}:{hl7.outbound_port}"
    return endpoints
