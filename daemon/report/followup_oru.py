"""The follow-up comparison as an HL7 v2.5.1 ORU^R01 for the EHR (final, status F).

OBR-4 HEMEX-ICH-FU; OBX rows: the follow-up and baseline volumes (each with its method
and version in OBX-17), the change in mL and per cent, the hours between the CTs, the
expansion label by the volume rule and by the revised definition (Y, N, or NA = not
assessable, HL7 table 0136 plus NA), and each reason behind the decision. Codes are
local (99HEMEX), listed in docs/hl7.md.
"""

from __future__ import annotations

from datetime import datetime

from daemon.config import Hl7Settings
from daemon.hl7_escape import escape
from daemon.report.oru_builder import Observation, code_of, encode_oru_r01
from domain.outcomes import ObservedOutcome
from domain.study import StudyIdentity

_LABELS = {True: "Y^Yes^HL70136", False: "N^No^HL70136", None: "NA^Not assessable^99HEMEX"}


def build_followup_oru(identity: StudyIdentity, outcome: ObservedOutcome, settings: Hl7Settings,
                       software_version: str, now: datetime | None = None) -> bytes:
    """Encode the follow-up of ``identity`` (its study) as one ORU^R01.

    Raises
    ------
    ReportBuildError
        The message does not validate against the HL7 v2.5.1 ORU_R01 structure.
    """
    return encode_oru_r01(identity, settings, "F", ("HEMEX-ICH-FU", "Intracerebral hemorrhage follow-up CT"),
                          _observations(outcome, software_version), now)


def _observations(o: ObservedOutcome, software_version: str) -> list[Observation]:
    change = o.change
    follow = code_of(escape(o.followup_method_name), f"{o.followup_method_name} {o.followup_method_version}")
    base = code_of(escape(o.method_name), f"{o.method_name} {o.method_version}")
    comparison = code_of("HEMEX-FU", f"hemex follow-up comparison, hemex {software_version}")
    rows: list[Observation] = [
        ("NM", code_of("HEMEX-VOL", "Intraparenchymal hematoma volume, planimetry"), f"{change.followup_ml:.1f}",
         "mL", follow),
        ("NM", code_of("HEMEX-VOL-BASE", "Hematoma volume at baseline CT"), f"{change.baseline_ml:.1f}", "mL", base),
        ("NM", code_of("HEMEX-VOL-CHG", "Change in hematoma volume since baseline"), f"{change.change_ml:.1f}",
         "mL", comparison),
    ]
    if change.change_relative is not None:
        rows.append(("NM", code_of("HEMEX-VOL-REL", "Relative change in hematoma volume since baseline"),
                     f"{change.change_relative * 100.0:.1f}", "%", comparison))
    rows += [
        ("NM", code_of("HEMEX-FU-HOURS", "Hours from baseline CT"), f"{change.hours_between:.1f}", "h", comparison),
        ("CWE", code_of("HEMEX-HE", "Hematoma expansion (> 6 mL or > 33 %)"), _LABELS[change.expansion], "",
         comparison),
        ("CWE", code_of("HEMEX-HE-REV", "Hematoma expansion, revised definition (new or growing IVH)"),
         _LABELS[change.revised_expansion], "", comparison),
        ("ST", code_of("HEMEX-FU-BASE", "Baseline study"),
         escape(f"{o.baseline_study_uid} acquired {o.baseline_acquired_at.isoformat(timespec='minutes')}"), "", ""),
    ]
    rows += [("ST", code_of("HEMEX-FU-NOTE", "Follow-up decision"), escape(reason), "", comparison)
             for reason in change.reasons]
    rows.append(("ST", code_of("HEMEX-SOFTWARE", "Software"), escape(f"hemex {software_version}"), "", ""))
    return rows
