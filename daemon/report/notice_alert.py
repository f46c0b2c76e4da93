"""The alert for a CT that could not be analysed, written to disk for dispatch to queue.

Key ``not-analysed`` (sent once per study). The payload has the alert schema's study
block and, instead of the hematoma, a ``not_analysed`` block: the headline, the reason
and the series received. When the study is analysed after all, its report raises the
``analysed-after-notice`` alert (alert_rules), so the same people hear the result.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from daemon.config import AlertSettings, IdentifierLevel
from daemon.report.alert_files import alert_paths
from daemon.report.alert_message import SCHEMA, identifier_lines, payload_json, study_identifiers
from daemon.report.alert_rules import NOT_ANALYSED_KEY
from daemon.report.notice_builder import notice_lines, series_lines
from domain.durable_files import ensure_private_dir, write_atomically
from domain.notice import NotAnalysedNotice
from domain.report import AlertFiles

REASON_NOT_ANALYSED = "not_analysed"


def notice_payload(notice: NotAnalysedNotice, created_at: datetime | None = None,
                   identifiers: IdentifierLevel = "none") -> dict[str, Any]:
    """The JSON-ready alert for ``notice`` (no patient name, no links; identifiers as
    ``alerts.include_identifiers`` allows)."""
    return {
        "schema": SCHEMA,
        "alert_key": NOT_ANALYSED_KEY,
        "reasons": [REASON_NOT_ANALYSED],
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "report": {"status": "not analysed", "software_version": notice.software_version},
        "study": study_identifiers(notice.identity, identifiers),
        "not_analysed": {
            "headline": notice.headline,
            "state": notice.state.value,
            "reason": notice.reason,
            "series": [{"series_number": s.series_number, "description": s.description,
                        "images": s.image_count, "outcome": s.outcome} for s in notice.series],
        },
    }


def notice_email(payload: dict[str, Any], notice: NotAnalysedNotice) -> bytes:
    """The stored e-mail (Subject without patient identifiers; the channel adds From/To)."""
    study = payload["study"]
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = f"[hemex] CT NOT analysed - study {study['handle']}"
    message["Message-ID"] = email.utils.make_msgid(domain="hemex.invalid")
    lines = [
        *notice_lines(notice), "",
        *identifier_lines(study),
        f"Study handle:      {study['handle']}", "",
        *series_lines(notice),
    ]
    message.set_content("\n".join(lines) + "\n")
    return message.as_bytes()


def prepare_notice_alert(notice: NotAnalysedNotice, settings: AlertSettings, results_dir: Path,
                         already_raised: Callable[[str], bool]) -> AlertFiles | None:
    """The ``not-analysed`` alert, written to disk; None when turned off or sent before."""
    if not settings.on_not_analysed or already_raised(NOT_ANALYSED_KEY):
        return None
    payload = notice_payload(notice, identifiers=settings.include_identifiers)
    json_path, email_path = alert_paths(results_dir, notice.identity.handle, NOT_ANALYSED_KEY)
    ensure_private_dir(json_path.parent)
    write_atomically(json_path, payload_json(payload))
    email_wanted = settings.email.enabled and bool(settings.email.recipients)
    if email_wanted:
        write_atomically(email_path, notice_email(payload, notice))
    return AlertFiles(NOT_ANALYSED_KEY, (REASON_NOT_ANALYSED,), json_path, email_path if email_wanted else None)
