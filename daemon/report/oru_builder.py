"""The analysis result as an HL7 v2.5.1 ORU^R01 for the EHR (built and validated with hl7apy).

OBR-25 and every OBX-11 say P (preliminary: image-only, clinical variables missing)
or F (final). A study that could not be analysed gets a final ORU that says so and why
(HEMEX-STATUS NOT-ANALYSED, HEMEX-REASON). A final result reuses the preliminary one's filler order number (OBR-3,
the Study Instance UID) so the receiver replaces it. Every value names the algorithm
and version that made it (OBX-17); a prediction from weights that are not clinically
validated is sent with that status and a "not for clinical use" statement.
Codes are local (coding system 99HEMEX); they are listed in docs/hl7.md.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException

from daemon.config import Hl7Settings
from daemon.hl7_escape import escape
from domain.analysis import StudyAnalysis
from domain.errors import ReportBuildError
from domain.notice import NotAnalysedNotice
from domain.study import StudyIdentity

ORU_FILE_NAME = "result.oru.hl7"
CODING_SYSTEM = "99HEMEX"
VERSION = "2.5.1"


def code_of(code: str, text: str) -> str:
    """A CWE of the local coding system: code^text^99HEMEX (text escaped)."""
    return _code(code, text)


def _code(code: str, text: str) -> str:
    return f"{code}^{escape(text)}^{CODING_SYSTEM}"


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def oru_control_id(message: bytes) -> str:
    """MSH-10 of a message built here."""
    return message.split(b"\r", 1)[0].decode("utf-8").split("|")[9]


def build_oru_r01(analysis: StudyAnalysis, settings: Hl7Settings, now: datetime | None = None) -> bytes:
    """Encode ``analysis`` as one ORU^R01 message (ER7, UTF-8, CR segment ends).

    Raises
    ------
    ReportBuildError
        The message does not validate against the HL7 v2.5.1 ORU_R01 structure.
    """
    status = "F" if analysis.completion == "COMPLETE" else "P"
    return encode_oru_r01(analysis.identity, settings, status,
                          ("HEMEX-ICH", "Intracerebral hemorrhage CT analysis"), _observations(analysis), now)


Observation = tuple[str, str, str, str, str]  # OBX-2, OBX-3, OBX-5, OBX-6, OBX-17


def encode_oru_r01(identity: StudyIdentity, settings: Hl7Settings, status: str, service: tuple[str, str],
                   observations: list[Observation], now: datetime | None = None) -> bytes:
    """One ORU^R01 (v2.5.1) about ``identity``'s study: OBR-4 ``service`` (code, text),
    OBR-25 and every OBX-11 ``status`` (P or F), one OBX per observation.

    Raises
    ------
    ReportBuildError
        The message does not validate against the HL7 v2.5.1 ORU_R01 structure.
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    try:
        msg = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
        msh = msg.msh
        msh.msh_3 = escape(settings.sending_application)
        if settings.sending_facility:
            msh.msh_4 = escape(settings.sending_facility)
        if settings.outbound_receiving_application:
            msh.msh_5 = escape(settings.outbound_receiving_application)
        if settings.outbound_receiving_facility:
            msh.msh_6 = escape(settings.outbound_receiving_facility)
        msh.msh_7 = stamp
        msh.msh_9 = "ORU^R01^ORU_R01"
        msh.msh_10 = uuid.uuid4().hex[:20]
        msh.msh_11 = "P"
        msh.msh_18 = "UNICODE UTF-8"
        result = msg.add_group("ORU_R01_PATIENT_RESULT")
        pid = result.add_group("ORU_R01_PATIENT").add_segment("PID")
        pid.pid_1 = "1"
        pid.pid_3 = f"{escape(identity.patient_id or '')}^^^{escape(identity.issuer_of_patient_id or '')}"
        # DICOM PN family^given^middle^prefix^suffix maps onto XPN; ideographic groups dropped.
        name = (identity.patient_name or "").split("=")[0]
        pid.pid_5 = "^".join(escape(part) for part in name.split("^")) if name else '""'
        order = result.add_group("ORU_R01_ORDER_OBSERVATION")
        obr = order.add_segment("OBR")
        obr.obr_1 = "1"
        obr.obr_3 = f"{escape(identity.study_uid)}^{escape(settings.sending_application)}"
        obr.obr_4 = _code(*service)
        if identity.study_datetime:
            obr.obr_7 = identity.study_datetime.split(".")[0][:14]
        if identity.accession_number:
            obr.obr_18 = escape(identity.accession_number)
        obr.obr_22 = stamp
        obr.obr_24 = "CT"
        obr.obr_25 = status
        for index, (value_type, code, value, unit, method) in enumerate(observations, start=1):
            obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
            obx.obx_1 = str(index)
            obx.obx_2 = value_type
            obx.obx_3 = code
            obx.obx_5 = value
            if unit:
                obx.obx_6 = unit
            obx.obx_11 = status
            obx.obx_14 = stamp
            if method:
                obx.obx_17 = method
        if not msg.validate():
            raise ReportBuildError("ORU^R01 failed validation")
        return (msg.to_er7() + "\r").encode("utf-8")
    except (HL7apyException, ValueError) as exc:
        # hl7apy quotes the refused value (unquoted) in its message: the type only, no value.
        raise ReportBuildError(f"ORU^R01 could not be built ({type(exc).__name__})") from exc


def _observations(a: StudyAnalysis) -> list[Observation]:
    """(OBX-2, OBX-3, OBX-5, OBX-6, OBX-17) rows, in the order they are sent."""
    m = a.measurements
    method = _code(escape(m.method_name), f"{m.method_name} {m.method_version}")
    rows = [
        ("NM", _code("HEMEX-VOL", "Intraparenchymal hematoma volume, planimetry"), _number(m.volume_ml, 1),
         "mL", method),
        ("NM", _code("HEMEX-ABC2", "Hematoma volume, ABC/2 estimate"), _number(m.abc2_ml, 1), "mL", method),
    ]
    if m.intraventricular_extension is not None:
        yes = m.intraventricular_extension
        rows.append(("CWE", _code("HEMEX-IVH", "Intraventricular extension"),
                     "Y^Yes^HL70136" if yes else "N^No^HL70136", "", method))
    p = a.prediction
    if p is not None:
        model = _code(escape(p.model_name), f"{p.model_name} {p.model_version}")
        rows.append(("NM", _code("HEMEX-HEP", "Hematoma expansion probability"), _number(p.probability, 3),
                     "{probability}", model))
        rows.append(("ST", _code("HEMEX-MODEL", "Expansion model and weights"),
                     escape(f"{p.model_name} {p.model_version}; weights: {p.weights_origin}"
                            + ("; image-only fallback" if p.image_only_fallback else "")), "", model))
        validated = ("VALIDATED^Clinically validated weights^99HEMEX" if p.clinically_validated else
                     "NOT-VALIDATED^Not clinically validated - not for clinical use^99HEMEX")
        rows.append(("CWE", _code("HEMEX-VALIDATION", "Model validation status"), validated, "", model))
        rows.append(("ST", _code("HEMEX-VARS-USED", "Clinical variables used"),
                     escape(", ".join(p.variables_used) or "none"), "", model))
        rows.append(("ST", _code("HEMEX-VARS-MISSING", "Clinical variables missing"),
                     escape(", ".join(p.variables_missing) or "none"), "", model))
    rows.append(("CWE", _code("HEMEX-RISK", "Hematoma expansion risk category"),
                 _code(a.risk_category.upper().replace("_", "-"), _RISK_TEXT[a.risk_category]), "", ""))
    brain = a.brain_score
    points = getattr(brain, "points", None)
    if points is not None:
        rows.append(("NM", _code("HEMEX-BRAIN", "BRAIN score (Wang et al. Stroke 2015)"), str(points),
                     "{score}", _code("BRAIN", "BRAIN score 2015")))
    rows.append(("ST", _code("HEMEX-SOFTWARE", "Software"), escape(f"hemex {a.software_version}"), "", ""))
    return rows


_RISK_TEXT = {
    "high": "High risk of hematoma expansion",
    "low": "Low risk of hematoma expansion",
    "not_validated": "No validated model: risk not stated",
    "unavailable": "No prediction available",
}


def build_not_analysed_oru(notice: NotAnalysedNotice, settings: Hl7Settings, now: datetime | None = None) -> bytes:
    """The "not analysed" notice as an ORU^R01 (final, same filler order number as a
    report of the study, so a later report replaces it).

    Raises
    ------
    ReportBuildError
        The message does not validate against the HL7 v2.5.1 ORU_R01 structure.
    """
    rows: list[Observation] = [
        ("CWE", _code("HEMEX-STATUS", "Analysis status"), _code("NOT-ANALYSED", notice.headline), "", ""),
        ("TX", _code("HEMEX-REASON", "Why the CT was not analysed"), escape(notice.reason), "", "")]
    rows += [("TX", _code("HEMEX-SERIES", "Series received"),
              escape(f"series {s.series_number or '?'} {s.description or '(no description)'},"
                     f" {s.image_count} images: {s.outcome}"), "", "") for s in notice.series]
    rows.append(("ST", _code("HEMEX-SOFTWARE", "Software"), escape(f"hemex {notice.software_version}"), "", ""))
    return encode_oru_r01(notice.identity, settings, "F", ("HEMEX-ICH", "Intracerebral hemorrhage CT analysis"),
                          rows, now)
