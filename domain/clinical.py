"""Clinical variables attached to a study, as the predictor and scores read them, and the
one list of the expansion predictor's variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal

# Multimodal CNN Model 2 (Tanioka et al. 2024): its five variables in the model's input
# order. The model, its card, training, the report and the alert all read this one list.
PREDICTOR_VARIABLES: tuple[str, ...] = (
    "anticoagulant_use",
    "systolic_bp_mmhg",
    "diastolic_bp_mmhg",
    "pt_inr",
    "hours_onset_to_ct",
)
# Predictor variables that enter the model as 0/1 and are not standardised.
BINARY_PREDICTOR_VARIABLES: frozenset[str] = frozenset({"anticoagulant_use"})


@dataclass(frozen=True)
class ClinicalVariables:
    """Values matched to one CT study; None where nothing was found.

    Units are fixed here; conversion happens at intake (daemon/intake).
    """

    anticoagulant_use: bool | None = None
    antiplatelet_use: bool | None = None
    systolic_bp_mmhg: float | None = None
    diastolic_bp_mmhg: float | None = None
    pt_inr: float | None = None
    platelets_10e9_per_l: float | None = None
    fibrinogen_g_per_l: float | None = None
    aptt_s: float | None = None
    hemoglobin_g_per_dl: float | None = None
    wbc_10e9_per_l: float | None = None
    creatinine_umol_per_l: float | None = None
    bilirubin_umol_per_l: float | None = None
    gcs: int | None = None
    age_years: float | None = None
    sex: str | None = None
    onset_time: datetime | None = None
    hours_onset_to_ct: float | None = None
    recurrent_ich: bool | None = None

    def present(self) -> dict[str, object]:
        """The variables that have a value."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def missing(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """Those of ``names`` that have no value."""
        return tuple(n for n in names if getattr(self, n) is None)


Kind = Literal["number", "integer", "boolean", "time"]


@dataclass(frozen=True)
class VariableSpec:
    """A ClinicalVariables field: its unit, accepted units -> factor, plausible range."""

    name: str
    kind: Kind
    unit: str
    units: Mapping[str, float]
    low: float = float("-inf")
    high: float = float("inf")


_PER_L_10E9 = {"10*9/l": 1.0, "10*3/ul": 1.0, "10*3/mm3": 1.0, "k/ul": 1.0, "/nl": 1.0, "thou/ul": 1.0}
_SCORE = {"": 1.0, "{score}": 1.0, "score": 1.0, "{points}": 1.0, "points": 1.0, "{total}": 1.0}

# Keys are normalised units (see normalise_unit). Ranges are in the variable's unit and
# exclude values no living patient has (most often a unit or decimal-point error).
VARIABLES: dict[str, VariableSpec] = {s.name: s for s in (
    VariableSpec("systolic_bp_mmhg", "number", "mm[Hg]", {"mm[hg]": 1.0, "mmhg": 1.0}, 40, 300),
    VariableSpec("diastolic_bp_mmhg", "number", "mm[Hg]", {"mm[hg]": 1.0, "mmhg": 1.0}, 20, 200),
    VariableSpec("pt_inr", "number", "{INR}",
                 {"": 1.0, "{inr}": 1.0, "inr": 1.0, "{ratio}": 1.0, "ratio": 1.0, "1": 1.0}, 0.5, 20),
    VariableSpec("platelets_10e9_per_l", "number", "10*9/L", _PER_L_10E9, 1, 2000),
    VariableSpec("fibrinogen_g_per_l", "number", "g/L", {"g/l": 1.0, "mg/dl": 0.01}, 0.1, 15),
    VariableSpec("aptt_s", "number", "s", {"s": 1.0, "sec": 1.0, "seconds": 1.0}, 10, 250),
    VariableSpec("hemoglobin_g_per_dl", "number", "g/dL", {"g/dl": 1.0, "g/l": 0.1, "mmol/l": 1.611}, 2, 25),
    VariableSpec("wbc_10e9_per_l", "number", "10*9/L", _PER_L_10E9, 0.05, 500),
    VariableSpec("creatinine_umol_per_l", "number", "umol/L",
                 {"umol/l": 1.0, "mg/dl": 88.42, "mmol/l": 1000.0}, 10, 3000),
    VariableSpec("bilirubin_umol_per_l", "number", "umol/L",
                 {"umol/l": 1.0, "mg/dl": 17.1, "mmol/l": 1000.0}, 0, 1000),
    VariableSpec("gcs", "integer", "{score}", _SCORE, 3, 15),
    VariableSpec("anticoagulant_use", "boolean", "", {}),
    VariableSpec("antiplatelet_use", "boolean", "", {}),
    VariableSpec("recurrent_ich", "boolean", "", {}),
    VariableSpec("onset_time", "time", "", {}),
)}


@dataclass(frozen=True)
class PatientIdentifier:
    """One patient identifier with its assigning authority (HL7 CX / DICOM issuer)."""

    patient_id: str
    issuer: str  # assigning authority namespace id (CX-4.1)
    issuer_universal: str = ""  # CX-4.2


def identifier_matches(patient_id: str | None, issuer: str | None, identifier: PatientIdentifier) -> bool:
    """Whether a study's Patient ID and Issuer of Patient ID name ``identifier``.

    The IDs must be equal. An issuer missing on either side matches any issuer; otherwise
    the study's issuer must equal the identifier's namespace or universal id.
    """
    if not patient_id or patient_id != identifier.patient_id:
        return False
    if not issuer or not identifier.issuer:
        return True
    return issuer in (identifier.issuer, identifier.issuer_universal)


@dataclass(frozen=True)
class Observation:
    """A clinical observation in ClinicalVariables units, ready to store."""

    variable: str
    value_num: float | None
    value_time: datetime | None
    unit: str
    observed_at: datetime
    source_code: str
    accession: str | None


@dataclass(frozen=True)
class StoredObservation:
    """An observation as stored for a patient, with the row and message it came from."""

    id: int
    patient_key: int
    observation: Observation
    message_id: int


@dataclass(frozen=True)
class Demographics:
    """Birth date and sex of a patient (PID-7, PID-8); None where unknown."""

    birth_date: str | None
    sex: str | None


@dataclass(frozen=True)
class Provenance:
    """Where a matched value came from; no PHI (row ids, codes and times only)."""

    source: str  # e.g. "LN:6301-6", "ATC:B01AF01", "PID-7"
    observed_at: datetime | None
    hours_from_ct: float | None  # negative = before the CT
    message_id: int | None
    matched_by: str  # "patient" | "accession" | "demographics" | "derived"


@dataclass(frozen=True)
class MatchedClinical:
    """The clinical variables matched to one study, each with its provenance."""

    variables: ClinicalVariables
    provenance: Mapping[str, Provenance]
