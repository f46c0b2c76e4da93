"""The alert a study's analysis raises, written to disk for dispatch to queue.

The payload (JSON, for webhooks) and the e-mail are written atomically under
``results_dir/alerts/<handle>/``; an alert whose key was raised for the study before is
not written again (it is sent once per study and key).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from daemon.config import AlertSettings
from daemon.report.alert_message import (
    build_alert_payload,
    build_email,
    key_image_field,
    payload_json,
)
from daemon.report.alert_rules import NOT_ANALYSED_KEY, decide_alert
from domain.alerts import AlertAcknowledgement
from domain.analysis import StudyAnalysis
from domain.durable_files import ensure_private_dir, write_atomically
from domain.report import AlertFiles

log = logging.getLogger(__name__)


def alert_paths(results_dir: Path, handle: str, alert_key: str) -> tuple[Path, Path]:
    """Where the payload (JSON) and the e-mail message of one alert are kept."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", alert_key).strip("-")
    folder = Path(results_dir) / "alerts" / handle
    return folder / f"{name}.json", folder / f"{name}.eml"


def prepare_alert(analysis: StudyAnalysis, settings: AlertSettings, results_dir: Path,
                  already_raised: Callable[[str], bool], key_image_png: bytes | None = None,
                  acknowledgement: Callable[[], AlertAcknowledgement | None] | None = None) -> AlertFiles | None:
    """The alert ``analysis`` raises, written to disk, or None (no rule fired, or its key
    was raised for the study before: ``already_raised(key)``).

    ``key_image_png`` (the key image, no PHI burned in) goes with the alert when
    ``alerts.attach_key_image`` is on: base64 in the webhook payload's ``key_image``, an
    attachment of the e-mail. ``acknowledgement`` gives the group the alert joins (its
    code and link go into the files).
    """
    decision = decide_alert(analysis, settings, after_notice=already_raised(NOT_ANALYSED_KEY))
    handle = analysis.identity.handle
    if decision is None:
        log.info("no alert study=%s", handle)
        return None
    if already_raised(decision.key):
        log.info("alert already sent study=%s key=%s", handle, decision.key)
        return None
    ack = acknowledgement() if acknowledgement is not None else None
    payload = build_alert_payload(analysis, decision, acknowledgement=ack, identifiers=settings.include_identifiers)
    attachment = key_image_png if settings.attach_key_image else None
    if attachment is not None:
        payload["key_image"] = key_image_field(attachment)
    return write_alert_files(results_dir, handle, decision.key, decision.reasons, payload_json(payload),
                             build_email(payload, key_image_png=attachment), settings, ack)


def write_alert_files(results_dir: Path, handle: str, key: str, reasons: tuple[str, ...], payload: bytes,
                      message: bytes, settings: AlertSettings,
                      acknowledgement: AlertAcknowledgement | None) -> AlertFiles:
    """Write one alert's payload (and e-mail, when e-mail is configured) atomically."""
    json_path, email_path = alert_paths(results_dir, handle, key)
    ensure_private_dir(json_path.parent)
    write_atomically(json_path, payload)
    email_wanted = settings.email.enabled and (bool(settings.email.recipients) or bool(settings.contacts))
    if email_wanted:
        write_atomically(email_path, message)
    return AlertFiles(key, reasons, json_path, email_path if email_wanted else None, acknowledgement)
