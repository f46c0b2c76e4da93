"""What an alert says: the JSON payload (webhook) and the e-mail text.

Both carry the measured values, each with the method or model and version that produced
it, and the study's handle (not PHI: ``hemex status``, the console and the node's results
name the study by it). Which identifiers they add is ``alerts.include_identifiers``:
"none" by default (alerts often cross networks and land on phones), "accession"
(accession number and study date), or "all" (also patient ID and issuer, Study Instance
UID). Neither ever carries the patient name, nor any link (an alert must not point
outside the hospital's systems) but the acknowledgement link, which points at the node
itself, and its short code. An expansion probability from weights that are not
clinically validated is labelled so, in words, every time it appears.
"""

from __future__ import annotations

import base64
import email.message
import email.policy
import email.utils
import json
from datetime import datetime, timezone
from typing import Any

from daemon.config import IdentifierLevel
from daemon.report.alert_rules import AlertDecision
from domain.alerts import AlertAcknowledgement
from domain.analysis import StudyAnalysis
from domain.dicom_time import parse_dicom_datetime
from domain.prediction import NO_MODEL_CONFIGURED
from domain.study import StudyIdentity

SCHEMA = "hemex.alert/1"
NOT_VALIDATED_NOTICE = ("NOT CLINICALLY VALIDATED: research output from weights not validated on "
                        "patient data; do not use for clinical decisions.")
COMPLETION_WORDS = {"PARTIAL": "preliminary", "COMPLETE": "final"}


def _study_date(value: str | None) -> str | None:
    """ISO date (or date and time, when the study has a time) of a DICOM DA+TM string."""
    parsed = parse_dicom_datetime(value)
    if parsed is None:
        return None  # an invalid value is never sent
    return parsed.date().isoformat() if len((value or "").strip()) <= 8 else parsed.isoformat()


def study_identifiers(identity: StudyIdentity, level: IdentifierLevel) -> dict[str, Any]:
    """An alert's "study" object: the handle, plus the identifiers ``level`` allows
    (``alerts.include_identifiers``; every alert builder uses this one)."""
    study: dict[str, Any] = {"handle": identity.handle, "identifiers": level}
    if level in ("accession", "all"):
        study["accession_number"] = identity.accession_number
        study["study_date"] = _study_date(identity.study_datetime)
    if level == "all":
        study["study_instance_uid"] = identity.study_uid
        study["patient_id"] = identity.patient_id
        study["issuer_of_patient_id"] = identity.issuer_of_patient_id
    return study


def acknowledgement_section(acknowledgement: AlertAcknowledgement | None) -> dict[str, Any] | None:
    """How to acknowledge the alert: its short code and, when configured, its link."""
    if acknowledgement is None:
        return None
    return {"code": acknowledgement.short_code, "url": acknowledgement.url}


def build_alert_payload(analysis: StudyAnalysis, decision: AlertDecision, created_at: datetime | None = None,
                        acknowledgement: AlertAcknowledgement | None = None,
                        identifiers: IdentifierLevel = "none") -> dict[str, Any]:
    """The JSON-ready alert for ``analysis`` (no patient name, no link but the
    acknowledgement link; identifiers as ``identifiers`` allows, module docstring)."""
    measurements = analysis.measurements
    prediction = analysis.prediction
    expansion: dict[str, Any] | None = None
    if prediction is not None:
        expansion = {
            "probability": round(float(prediction.probability), 4),
            "risk_category": analysis.risk_category,
            "model": {"name": prediction.model_name, "version": prediction.model_version},
            "clinically_validated": prediction.clinically_validated,
            "not_clinically_validated": not prediction.clinically_validated,
            "image_only_fallback": prediction.image_only_fallback,
            "variables_missing": list(prediction.variables_missing),
            "outside_published_domain": list(prediction.outside_published_domain),
        }
        if not prediction.clinically_validated:
            expansion["notice"] = NOT_VALIDATED_NOTICE
    brain = analysis.brain_score
    brain_score = None if brain is None else {
        "points": getattr(brain, "points", None),
        "published_risk": getattr(brain, "published_risk", None),
        "missing": list(getattr(brain, "missing", ())),
        "reference": getattr(brain, "reference", None),
    }
    return {
        "schema": SCHEMA,
        "alert_key": decision.key,
        "reasons": list(decision.reasons),
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "report": {
            "status": COMPLETION_WORDS.get(analysis.completion, analysis.completion.lower()),
            "completion_flag": analysis.completion,
            "software_version": analysis.software_version,
        },
        "study": study_identifiers(analysis.identity, identifiers),
        "hematoma": {
            "volume_ml": round(float(measurements.volume_ml), 2),
            "volume_method": "planimetry",
            "abc2_ml": round(float(measurements.abc2_ml), 2),
            "diameters_mm": [round(float(d), 1) for d in measurements.diameters_mm],
            "intraventricular_extension": measurements.intraventricular_extension,
            "method": {"name": measurements.method_name, "version": measurements.method_version},
        },
        "expansion": expansion,
        "expansion_unavailable": None if expansion is not None else (
            analysis.prediction_unavailable or NO_MODEL_CONFIGURED),
        "brain_score": brain_score,
        "acknowledgement": acknowledgement_section(acknowledgement),
    }


def payload_json(payload: dict[str, Any]) -> bytes:
    """The payload as the UTF-8 JSON body the webhook receives."""
    return json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8")


def email_subject(payload: dict[str, Any]) -> str:
    """Subject line: no patient name or ID (subjects show on lock screens and in lists)."""
    hematoma, report = payload["hematoma"], payload["report"]
    risk = ""
    if "high_expansion_risk" in payload["reasons"]:
        risk = ", high expansion risk"
    return (f"[hemex] Intracerebral hemorrhage {hematoma['volume_ml']:.1f} mL{risk}"
            f" ({report['status']}) - study {payload['study']['handle']}")


def identifier_lines(study: dict[str, Any]) -> list[str]:
    """The e-mail lines of the identifiers a "study" object carries (none by default)."""
    lines = []
    if "patient_id" in study:
        lines.append(f"Patient ID:        {study['patient_id'] or '(none)'}"
                     + (f" (issuer {study['issuer_of_patient_id']})" if study["issuer_of_patient_id"] else ""))
    if "accession_number" in study:
        lines.append(f"Accession number:  {study['accession_number'] or '(none)'}")
        lines.append(f"Study date:        {study['study_date'] or '(unknown)'}")
    return lines


def email_body(payload: dict[str, Any]) -> str:
    """Plain-text body with the identifiers the payload carries and every value's method."""
    study, hematoma, report = payload["study"], payload["hematoma"], payload["report"]
    method = hematoma["method"]
    lines = [
        f"hemex {report['status']} result - automated analysis, to be confirmed by a radiologist.",
        "",
        *identifier_lines(study),
        f"Study handle:      {study['handle']}",
        "",
        f"Hematoma volume:   {hematoma['volume_ml']:.1f} mL (planimetry, {method['name']} {method['version']})",
        f"ABC/2 estimate:    {hematoma['abc2_ml']:.1f} mL (for comparison)",
    ]
    expansion = payload["expansion"]
    if expansion is not None:
        model = expansion["model"]
        lines.append(f"Expansion risk:    probability {expansion['probability']:.2f},"
                     f" category {expansion['risk_category']} ({model['name']} {model['version']})")
        if expansion["not_clinically_validated"]:
            lines.append(f"                   {NOT_VALIDATED_NOTICE}")
        lines += [f"                   Outside the published domain: {reason}"
                  for reason in expansion["outside_published_domain"]]
    else:
        lines.append(f"Expansion risk:    not available ({payload['expansion_unavailable']})")
    brain = payload["brain_score"]
    if brain is not None:
        points = "incomplete" if brain["points"] is None else f"{brain['points']} points"
        lines.append(f"BRAIN score:       {points} ({brain['reference']})")
    lines += ["", f"Alert reasons:     {', '.join(payload['reasons'])}",
              f"Report:            {report['completion_flag']} (hemex {report['software_version']})"]
    return "\n".join(lines + acknowledgement_lines(payload.get("acknowledgement"))) + "\n"


def acknowledgement_lines(section: dict[str, Any] | None) -> list[str]:
    """The e-mail lines that tell staff how to acknowledge (empty without a section)."""
    if not section:
        return []
    lines = ["", f"Acknowledge:       {section['url']}" if section.get("url") else
             "Acknowledge:       on the node: hemex alerts --ack CODE",
             f"Short code:        {section['code']}",
             "Unacknowledged alerts go to the next on-call contact."]
    return lines


KEY_IMAGE_FILE_NAME = "hemex-key-image.png"


def key_image_field(png: bytes) -> dict[str, str]:
    """The webhook payload's ``key_image``: the PNG, base64, with its media type."""
    return {"media_type": "image/png", "file_name": KEY_IMAGE_FILE_NAME,
            "base64": base64.b64encode(png).decode("ascii")}


def build_email(payload: dict[str, Any], key_image_png: bytes | None = None) -> bytes:
    """The stored message (Subject, Message-ID, body, the key image attached when given);
    the channel adds From/To/Date."""
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = email_subject(payload)
    message["Message-ID"] = email.utils.make_msgid(domain="hemex.invalid")
    message.set_content(email_body(payload))
    if key_image_png is not None:
        message.add_attachment(key_image_png, maintype="image", subtype="png", filename=KEY_IMAGE_FILE_NAME)
    return message.as_bytes()
