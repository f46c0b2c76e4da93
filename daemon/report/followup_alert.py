"""The alert a follow-up CT raises when it shows hematoma expansion: JSON for webhooks,
the e-mail text, both written to disk like any alert (``alert_files.write_alert_files``).

It carries what the first alert carries (identifiers to find the study, no patient name,
every value with its method and version) plus the baseline, the change and the label,
and the acknowledgement code and link. Sent once per follow-up study; it joins the
patient's unacknowledged alert group when there is one.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from daemon.config import AlertSettings, IdentifierLevel
from daemon.report.alert_files import write_alert_files
from daemon.report.alert_message import (
    acknowledgement_lines,
    acknowledgement_section,
    identifier_lines,
    study_identifiers,
)
from domain.alerts import AlertAcknowledgement
from domain.outcomes import ObservedOutcome
from domain.report import AlertFiles
from domain.study import StudyIdentity

SCHEMA = "hemex.followup-alert/1"
ALERT_KEY = "followup:expansion"
REASON = "observed_hematoma_expansion"


def build_followup_payload(identity: StudyIdentity, outcome: ObservedOutcome, software_version: str,
                           acknowledgement: AlertAcknowledgement | None = None,
                           identifiers: IdentifierLevel = "none") -> dict[str, Any]:
    """The JSON-ready follow-up alert (no patient name, no link but the acknowledgement;
    identifiers and acquisition times as ``alerts.include_identifiers`` allows)."""
    change = outcome.change
    dated = identifiers != "none"
    study = study_identifiers(identity, identifiers)
    baseline: dict[str, Any] = {"handle": outcome.baseline_handle}
    if dated:
        study["acquired_at"] = outcome.followup_acquired_at.isoformat(timespec="minutes")
        baseline["acquired_at"] = outcome.baseline_acquired_at.isoformat(timespec="minutes")
    if identifiers == "all":
        baseline["study_instance_uid"] = outcome.baseline_study_uid
    return {
        "schema": SCHEMA,
        "alert_key": ALERT_KEY,
        "reasons": [REASON],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": study,
        "baseline": {
            **baseline,
            "volume_ml": round(change.baseline_ml, 2),
            "method": {"name": outcome.method_name, "version": outcome.method_version},
        },
        "followup": {
            "volume_ml": round(change.followup_ml, 2),
            "method": {"name": outcome.followup_method_name, "version": outcome.followup_method_version},
            "hours_after_baseline": round(change.hours_between, 1),
            "first_followup": outcome.role.value == "followup",
        },
        "change": {
            "ml": round(change.change_ml, 2),
            "percent": None if change.change_relative is None else round(change.change_relative * 100.0, 1),
            "expansion": change.expansion,
            "revised_expansion": change.revised_expansion,
            "rule": "> 6 mL or > 33 % of baseline volume",
            "reasons": list(change.reasons),
        },
        "software_version": software_version,
        "acknowledgement": acknowledgement_section(acknowledgement),
    }


def email_text(payload: dict[str, Any]) -> tuple[str, str]:
    """(Subject, body): the subject without identifiers (it shows on lock screens)."""
    change, base, follow, study = payload["change"], payload["baseline"], payload["followup"], payload["study"]
    percent = "" if change["percent"] is None else f", {change['percent']:+.0f} %"
    subject = (f"[hemex] Hematoma expansion observed: {change['ml']:+.1f} mL{percent}"
               f" in {follow['hours_after_baseline']:.0f} h - study {study['handle']}")
    lines = [
        "hemex follow-up result - automated comparison, to be confirmed by a radiologist.",
        "",
        *identifier_lines(study),
        f"Follow-up CT:      {_when(study)}study {study['handle']}",
        f"Baseline CT:       {_when(base)}study {base['handle']}",
        "",
        (f"Hematoma volume:   {base['volume_ml']:.1f} mL -> {follow['volume_ml']:.1f} mL"
         f" ({change['ml']:+.1f} mL{percent}) in {follow['hours_after_baseline']:.1f} h"),
        (f"Methods:           baseline {base['method']['name']} {base['method']['version']},"
         f" follow-up {follow['method']['name']} {follow['method']['version']}"),
        f"Expansion:         yes ({change['rule']})",
    ]
    lines += [f"                   {reason}" for reason in change["reasons"]]
    lines.append(f"Software:          hemex {payload['software_version']}")
    return subject, "\n".join(lines + acknowledgement_lines(payload.get("acknowledgement"))) + "\n"


def _when(block: dict[str, Any]) -> str:
    return f"{block['acquired_at']}, " if "acquired_at" in block else ""


def prepare_followup_alert(identity: StudyIdentity, outcome: ObservedOutcome, settings: AlertSettings,
                           results_dir: Path, software_version: str,
                           acknowledgement: AlertAcknowledgement | None) -> AlertFiles:
    """Write the follow-up alert's payload and e-mail; the caller decided it is due."""
    payload = build_followup_payload(identity, outcome, software_version, acknowledgement,
                                     identifiers=settings.include_identifiers)
    subject, body = email_text(payload)
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = subject
    message["Message-ID"] = email.utils.make_msgid(domain="hemex.invalid")
    message.set_content(body)
    return write_alert_files(results_dir, identity.handle, ALERT_KEY, (REASON,),
                             json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8"),
                             message.as_bytes(), settings, acknowledgement)
