"""Which configured channels would carry a secret or patient data unencrypted.

The node logs one warning per such channel at start-up, naming the setting that would
encrypt it (or take the identifiers out). Nothing is refused: a site may have its
reasons (a TLS tunnel, an isolated VLAN), but it must not find out from an audit.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

from daemon.config import Settings

_PATIENT_DATA = "images and reports carry patient names, IDs and dates"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_warnings(settings: Settings) -> list[str]:
    """One sentence per channel that would send a secret or patient data in clear."""
    warnings = []
    alerts = settings.alerts
    identifiers = alerts.include_identifiers != "none"
    hooks = [(f"alerts.webhooks[{hook.name}]", hook.url, hook.token is not None or hook.token_file is not None)
             for hook in alerts.webhooks]
    hooks += [(f"alerts.contacts[{c.name}].webhook_url", c.webhook_url,
               c.webhook_token is not None or c.webhook_token_file is not None)
              for c in alerts.contacts if c.webhook_url]
    for setting, url, has_token in hooks:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() == "https" or _loopback(parts.hostname or ""):
            continue
        what = [name for name, present in (
            ("its bearer token", has_token),
            ("the password in its URL", parts.password is not None),
            (f"patient identifiers (alerts.include_identifiers = {alerts.include_identifiers!r})", identifiers),
        ) if present]
        if what:
            warnings.append(f"{setting} is plain http: {' and '.join(what)} would cross the"
                            " network unencrypted; use an https:// URL")
    public = urllib.parse.urlsplit(alerts.acknowledgement.public_url)
    if public.scheme == "http" and not _loopback(public.hostname or ""):
        warnings.append("alerts.acknowledgement.public_url is plain http: each alert's acknowledgement link"
                        " (a signed token) would cross the network unencrypted; use https://")
    email = alerts.email
    sends_mail = email.enabled or any(c.email for c in alerts.contacts)
    if sends_mail and not (email.starttls or email.use_ssl) and not _loopback(email.smtp_host):
        what = [name for name, present in (
            ("the SMTP password", email.password is not None or email.password_file is not None),
            (f"patient identifiers (alerts.include_identifiers = {alerts.include_identifiers!r})", identifiers),
        ) if present]
        if what:
            warnings.append(f"alerts.email sends through {email.smtp_host} without TLS: {' and '.join(what)} would"
                            " cross the network unencrypted; set alerts.email.starttls or alerts.email.use_ssl")
    hl7 = settings.hl7
    if hl7.enabled and hl7.tls_cert is None and not _loopback(hl7.host):
        warnings.append(f"the HL7 listener on {hl7.host} is plain MLLP: lab results and patient identifiers"
                        " arrive unencrypted; set hl7.tls_cert and hl7.tls_key")
    if hl7.enabled and hl7.outbound_host and hl7.outbound_tls_ca is None and not _loopback(hl7.outbound_host):
        warnings.append(f"the ORU^R01 to {hl7.outbound_host} goes as plain MLLP with the patient's ID and name;"
                        " set hl7.outbound_tls_ca")
    dicom = settings.dicom
    if dicom.tls_cert is None and not _loopback(dicom.host):
        warnings.append(f"the DICOM listener on {dicom.host} is plain DICOM: {_PATIENT_DATA} unencrypted;"
                        " set dicom.tls_cert and dicom.tls_key")
    for destination in settings.destinations:
        if not _loopback(destination.host):
            warnings.append(f"destinations[{destination.name}] is plain DICOM (hemex has no outbound DICOM TLS):"
                            f" {_PATIENT_DATA}; keep {destination.host} on a protected network or tunnel it")
    return warnings
