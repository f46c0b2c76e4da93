"""Observation codes -> ClinicalVariables fields, with units converted and values checked.

One table says, for each variable, which units are accepted (and the factor to the
ClinicalVariables unit) and which values are plausible. Codes reach a variable through
the default LOINC map, the node's own local codes, or ``Hl7Settings.local_code_map``
(which wins). Medication codes are read as ATC: B01AA/B01AE/B01AF are anticoagulants
(vitamin K antagonists, direct thrombin inhibitors, direct factor Xa inhibitors) and
B01AC are platelet aggregation inhibitors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from daemon.intake.hl7_parsing import RawObservation, parse_hl7_datetime
from domain.clinical import VARIABLES, Observation
from domain.errors import ConfigurationError

# LOINC code -> (variable, unit assumed when OBX-6 is empty: the LOINC property's unit).
DEFAULT_LOINC_MAP: dict[str, tuple[str, str | None]] = {
    "8480-6": ("systolic_bp_mmhg", "mm[Hg]"),
    "8462-4": ("diastolic_bp_mmhg", "mm[Hg]"),
    "6301-6": ("pt_inr", "{INR}"),
    "34714-6": ("pt_inr", "{INR}"),
    "777-3": ("platelets_10e9_per_l", "10*3/uL"),
    "26515-7": ("platelets_10e9_per_l", "10*3/uL"),
    "3255-7": ("fibrinogen_g_per_l", "mg/dL"),
    "3173-2": ("aptt_s", "s"),
    "14979-9": ("aptt_s", "s"),
    "718-7": ("hemoglobin_g_per_dl", "g/dL"),
    "6690-2": ("wbc_10e9_per_l", "10*3/uL"),
    "26464-8": ("wbc_10e9_per_l", "10*3/uL"),
    "2160-0": ("creatinine_umol_per_l", "mg/dL"),
    "14682-9": ("creatinine_umol_per_l", "umol/L"),
    "1975-2": ("bilirubin_umol_per_l", "mg/dL"),
    "14631-6": ("bilirubin_umol_per_l", "umol/L"),
    "9269-2": ("gcs", "{score}"),
    "11368-8": ("onset_time", None),  # Illness or injury onset date and time
}
# The node's own codes for what LOINC has no common code for (any coding system).
DEFAULT_LOCAL_CODES: dict[str, str] = {
    "HEMEX-ONSET": "onset_time",
    "HEMEX-LKW": "onset_time",  # last known well: used as onset when onset is unknown
    "HEMEX-ANTICOAG": "anticoagulant_use",
    "HEMEX-ANTIPLT": "antiplatelet_use",
    "HEMEX-RECURRENT-ICH": "recurrent_ich",
}
ATC_ANTICOAGULANTS = ("B01AA", "B01AE", "B01AF")
ATC_ANTIPLATELETS = ("B01AC",)
_LOINC_SYSTEMS = {"LN", "LOINC", "2.16.840.1.113883.6.1", ""}

_YES = {"Y", "YES", "TRUE", "T", "1", "LA33-6", "373066001"}
_NO = {"N", "NO", "FALSE", "F", "0", "LA32-8", "373067005"}
_USABLE_STATUS = {"F", "C", "P", "R", "S", "A", "U", ""}


@dataclass(frozen=True)
class Rejection:
    """A recognised observation that cannot be used; ``reason`` has no PHI."""

    variable: str
    source_code: str
    reason: str


def normalise_unit(unit: str) -> str:
    """Lower-case UCUM-ish unit with the common spellings folded (10^9/L, x10E3/uL, umol)."""
    u = unit.strip().lower().replace(" ", "").replace("\u00b5", "u").replace("\u03bc", "u").replace("^", "*")
    return re.sub(r"^x?10(?:\*\*|\*|e)?(\d+)/", r"10*\1/", u)


def validate_local_code_map(local_code_map: Mapping[str, str]) -> None:
    """Refuse a configured code mapped to a variable that does not exist."""
    unknown = sorted({v for v in local_code_map.values() if v not in VARIABLES})
    if unknown:
        raise ConfigurationError(
            f"hl7.local_code_map names unknown variables {unknown}; known: {sorted(VARIABLES)}")


def _lookup(codes: tuple[tuple[str, str], ...], local_code_map: Mapping[str, str]) -> tuple[str, str | None, str] | None:
    """(variable, default unit, 'SYSTEM:code') for the first code that is mapped."""
    for system, code in codes:
        if code in local_code_map:
            return local_code_map[code], None, f"{system or 'L'}:{code}"
    for system, code in codes:
        if code.upper() in DEFAULT_LOCAL_CODES:
            return DEFAULT_LOCAL_CODES[code.upper()], None, f"{system or 'L'}:{code}"
        if system in _LOINC_SYSTEMS and code in DEFAULT_LOINC_MAP:
            variable, unit = DEFAULT_LOINC_MAP[code]
            return variable, unit, f"LN:{code}"
    return None


def _medication(raw: RawObservation, local_code_map: Mapping[str, str]) -> Observation | None:
    for system, code in raw.codes:
        variable = local_code_map.get(code)
        if variable is None:
            upper = code.upper().replace(" ", "")
            if upper.startswith(ATC_ANTICOAGULANTS):
                variable = "anticoagulant_use"
            elif upper.startswith(ATC_ANTIPLATELETS):
                variable = "antiplatelet_use"
        if variable in ("anticoagulant_use", "antiplatelet_use") and raw.observed_at is not None:
            return Observation(variable, 1.0, None, "", raw.observed_at,
                                     f"{system or 'ATC'}:{code}", raw.accession)
    return None


def map_observation(raw: RawObservation, local_code_map: Mapping[str, str]) -> Observation | Rejection | None:
    """Map one raw observation; None when its code is not one the node uses.

    Returns a ``Rejection`` (logged by the caller) when the code is known but the value,
    unit, status or time cannot be used.
    """
    if raw.kind == "medication":
        return _medication(raw, local_code_map)
    found = _lookup(raw.codes, local_code_map)
    if found is None:
        return None
    variable, default_unit, source = found
    spec = VARIABLES[variable]
    if raw.status not in _USABLE_STATUS:
        return Rejection(variable, source, f"result status {raw.status} is not a usable result")
    if raw.observed_at is None:
        return Rejection(variable, source, "no observation time (OBX-14, OBR-7 and MSH-7 empty)")
    text = raw.value.strip()
    if spec.kind == "boolean":
        # CE/CWE: the code (component 1), else its text (component 2).
        parts = [p.strip().upper() for p in text.split("^")]
        token = parts[0] or (parts[1] if len(parts) > 1 else "")
        if token in _YES or token in _NO:
            return Observation(variable, 1.0 if token in _YES else 0.0, None, "", raw.observed_at,
                                     source, raw.accession)
        return Rejection(variable, source, "value is not a coded yes/no")
    if spec.kind == "time":
        onset = parse_hl7_datetime(text)
        if onset is None:
            return Rejection(variable, source, "value is not an HL7 date/time")
        # An onset after the observation was recorded, or weeks before, is a typing error.
        if onset > raw.observed_at + timedelta(hours=1) or onset < raw.observed_at - timedelta(days=14):
            return Rejection(variable, source, "onset time implausible relative to the observation time")
        return Observation(variable, None, onset, "", onset, source, raw.accession)
    number = _number(raw.value_type, text)
    if number is None:
        return Rejection(variable, source, f"value of type {raw.value_type or '?'} is not a plain number")
    unit_text = raw.unit or default_unit or ""
    factor = spec.units.get(normalise_unit(unit_text))
    if factor is None:
        return Rejection(variable, source, f"unit '{unit_text}' not accepted (expected one of {sorted(spec.units)})")
    value = number * factor
    if spec.kind == "integer":
        if abs(value - round(value)) > 1e-6:
            return Rejection(variable, source, "value is not a whole number")
        value = float(round(value))
    if not spec.low <= value <= spec.high:
        return Rejection(variable, source, f"implausible value outside {spec.low:g}-{spec.high:g} {spec.unit}")
    return Observation(variable, value, None, spec.unit, raw.observed_at, source, raw.accession)


def _number(value_type: str, text: str) -> float | None:
    """A plain number from NM/ST, or SN with no comparator ('=' allowed); else None."""
    if value_type == "SN":
        parts = text.split("^")
        if len(parts) < 2 or parts[0].strip() not in ("", "=") or any(p.strip() for p in parts[2:]):
            return None
        text = parts[1]
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None
