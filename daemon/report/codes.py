"""Every coded concept the SR and SEG use, in one place.

Standard codes first (DCM, SCT, LN, UCUM). Where no standard concept exists the local
coding scheme ``99HEMEX`` is used (a "99" private designator as PS3.16 section 8.2
allows); it is declared in each SR's Coding Scheme Identification Sequence.

Choices worth knowing:
- The segment and the finding are SCT 50960005 "Hemorrhage" (CID 7159 lesion types,
  category SCT 49755003 "Morphologically abnormal structure") in SCT 12738006 "Brain".
  SCT 274100004 (cerebral hemorrhage) is a disorder, not a morphology that can be
  segmented, so it is not used as the segmented property type; "intraparenchymal" is
  carried by the segment label and tracking identifier.
- Planimetric volume: SCT 118565006 "Volume", method DCM 126030 "Sum of segmented voxel
  method for volume" (CID 7474). ABC/2: DCM 121221 "Volume of ellipsoid" (CID 7472), the
  bedside A x B x C / 2 rule being the ellipsoid formula pi/6 x A x B x C.
- Every measurement group is a TID 1411 group on the same SEG segment and tracking UID
  (the hematoma), one group per algorithm: masking/measurement, expansion model, BRAIN
  score. pixelmed's DicomSRValidator (2022) picks one of TID 1410/1411/1501 per document,
  so 1411 and 1501 groups cannot be mixed. Values that are not measurements of the
  hematoma (clinical variables, statements about the model) go to the report's own
  "Qualitative Evaluations" container (TID 1500 row 12: CODE and TEXT items).
- Clinical values use LOINC where one fits; values without a fitting LOINC term
  (anticoagulant use, hours from onset to CT, recurrent ICH) use 99HEMEX.
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

LOCAL_SCHEME = "99HEMEX"

LOCAL_SCHEME_IDENTIFICATION = CodingSchemeIdentificationItem(
    designator=LOCAL_SCHEME,
    name="hemex local codes for hematoma-expansion reporting",
    version="1",
    responsible_organization="hemex open-source project",
)


def local(value: str, meaning: str) -> CodedConcept:
    """A concept of the 99HEMEX local scheme."""
    return CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


# Finding, anatomy, segment -------------------------------------------------------------
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure  # 49755003
HEMORRHAGE = codes.SCT.Hemorrhage  # 50960005
EDEMA = codes.SCT.Edema  # 79654002
BRAIN = codes.SCT.Brain  # 12738006

# Algorithm families (CID 7162) --------------------------------------------------------
FAMILY_ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence  # 123110
FAMILY_MORPHOLOGICAL_OPERATIONS = codes.DCM.MorphologicalOperations  # 123104

# Report title and procedure -----------------------------------------------------------
REPORT_TITLE = codes.cid7021.ImagingMeasurementReport  # DCM 126000
# CID 100 has no head-CT entry; LN 30799-1 "CT Head WO contrast" fails the template check.
PROCEDURE_CT = CodedConcept("25045-6", "LN", "CT unspecified body region")
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12

# Hematoma volume -------------------------------------------------------------------------
VOLUME = codes.SCT.Volume  # 118565006
SUM_OF_SEGMENTED_VOXELS = codes.DCM.SumOfSegmentedVoxelMethodForVolume  # 126030
VOLUME_OF_ELLIPSOID = codes.DCM.VolumeOfEllipsoid  # 121221
MILLILITER = CodedConcept("ml", "UCUM", "milliliter")
MILLIMETER = CodedConcept("mm", "UCUM", "millimeter")
PERCENT = CodedConcept("%", "UCUM", "percent")
SCORE_POINTS = CodedConcept("{score}", "UCUM", "score")
HOURS = CodedConcept("h", "UCUM", "hour")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
YES = codes.SCT.Yes  # 373066001
NO = CodedConcept("373067005", "SCT", "No")
INTRAVENTRICULAR_EXTENSION = local("IVEXT", "Intraventricular extension of hemorrhage")

# Expansion prediction --------------------------------------------------------------------
EXPANSION_PROBABILITY = local("HEXPPROB", "Predicted probability of hematoma expansion")
EXPANSION_RISK_CATEGORY = local("HEXPRISK", "Hematoma expansion risk category")
HIGH_RISK = codes.SCT.HighRisk  # 15508007
LOW_RISK = codes.SCT.LowRisk  # 75976002
NOT_CLINICALLY_VALIDATED = local("NOTVALID", "Not clinically validated")
NO_VALIDATED_MODEL = local("NOMODEL", "No validated expansion model configured")
CLINICAL_VALIDATION_STATUS = local("VALIDSTAT", "Clinical validation status")
MODEL_STATEMENT = local("MODELNOTE", "Model statement")

# BRAIN score -----------------------------------------------------------------------------
BRAIN_SCORE = local("BRAINSCORE", "BRAIN score for hematoma expansion")
BRAIN_SCORE_PUBLISHED_RISK = local("BRAINRISK", "Published risk of expansion at BRAIN score")
BRAIN_SCORE_COMPONENT_MISSING = local("BRAINMISS", "BRAIN score component not available")

# Clinical variables ----------------------------------------------------------------------
CLINICAL_VARIABLE_MISSING = local("VARMISS", "Clinical variable not available")
EXPANSION_MODEL_WEIGHTS = local("WEIGHTS", "Expansion model weights origin")

# Numeric variables: ClinicalVariables field -> (concept, unit).
NUMERIC_VARIABLES: dict[str, tuple[CodedConcept, CodedConcept]] = {
    "systolic_bp_mmhg": (CodedConcept("8480-6", "LN", "Systolic blood pressure"),
                         CodedConcept("mm[Hg]", "UCUM", "mmHg")),
    "diastolic_bp_mmhg": (CodedConcept("8462-4", "LN", "Diastolic blood pressure"),
                          CodedConcept("mm[Hg]", "UCUM", "mmHg")),
    "pt_inr": (CodedConcept("6301-6", "LN", "INR in Platelet poor plasma by Coagulation assay"),
               CodedConcept("{INR}", "UCUM", "INR")),
    "platelets_10e9_per_l": (CodedConcept("777-3", "LN", "Platelets [#/volume] in Blood"),
                             CodedConcept("10*9/L", "UCUM", "10^9/L")),
    "fibrinogen_g_per_l": (CodedConcept("3255-7", "LN", "Fibrinogen [Mass/volume] in PPP"),
                           CodedConcept("g/L", "UCUM", "g/L")),
    "aptt_s": (CodedConcept("14979-9", "LN", "aPTT in Platelet poor plasma by Coagulation assay"),
               CodedConcept("s", "UCUM", "second")),
    "hemoglobin_g_per_dl": (CodedConcept("718-7", "LN", "Hemoglobin [Mass/volume] in Blood"),
                            CodedConcept("g/dL", "UCUM", "g/dL")),
    "wbc_10e9_per_l": (CodedConcept("6690-2", "LN", "Leukocytes [#/volume] in Blood"),
                       CodedConcept("10*9/L", "UCUM", "10^9/L")),
    "creatinine_umol_per_l": (CodedConcept("14682-9", "LN", "Creatinine [Moles/volume] in Serum or Plasma"),
                              CodedConcept("umol/L", "UCUM", "umol/L")),
    "bilirubin_umol_per_l": (CodedConcept("14631-6", "LN", "Bilirubin.total [Moles/volume] in Serum or Plasma"),
                             CodedConcept("umol/L", "UCUM", "umol/L")),
    "gcs": (CodedConcept("9269-2", "LN", "Glasgow coma score total"), SCORE_POINTS),
    "age_years": (CodedConcept("30525-0", "LN", "Age"), CodedConcept("a", "UCUM", "year")),
    "hours_onset_to_ct": (local("ONSET2CT", "Hours from symptom onset to CT"), HOURS),
}

# Yes/no variables: ClinicalVariables field -> concept.
BOOLEAN_VARIABLES: dict[str, CodedConcept] = {
    "anticoagulant_use": local("ANTICOAG", "Anticoagulant use at onset"),
    "antiplatelet_use": local("ANTIPLT", "Antiplatelet use at onset"),
    "recurrent_ich": local("RECURICH", "Recurrent intracerebral hemorrhage"),
}

SEX = CodedConcept("46098-0", "LN", "Sex")
SEX_VALUES: dict[str, CodedConcept] = {
    "M": CodedConcept("248153007", "SCT", "Male"),
    "F": CodedConcept("248152002", "SCT", "Female"),
}

ONSET_TIME = local("ONSETTIME", "Symptom onset or last known well time")


def variable_concept(name: str) -> CodedConcept:
    """The concept that names a ClinicalVariables field, for 'missing' statements."""
    if name in NUMERIC_VARIABLES:
        return NUMERIC_VARIABLES[name][0]
    if name in BOOLEAN_VARIABLES:
        return BOOLEAN_VARIABLES[name]
    if name == "sex":
        return SEX
    if name == "onset_time":
        return ONSET_TIME
    return local(name.upper()[:16], name.replace("_", " "))

# Follow-up CT (issue 14) -------------------------------------------------------------------
BASELINE_VOLUME = local("HEBASEVOL", "Hematoma volume at baseline CT")
VOLUME_CHANGE = local("HEVOLCHG", "Change in hematoma volume since baseline CT")
VOLUME_CHANGE_RELATIVE = local("HEVOLREL", "Relative change in hematoma volume since baseline CT")
TIME_SINCE_BASELINE = local("HEBASEH", "Time from baseline CT to this CT")
IVH_VOLUME = local("IVHVOL", "Intraventricular hemorrhage volume")
BASELINE_IVH_VOLUME = local("IVHBASEVOL", "Intraventricular hemorrhage volume at baseline CT")
OBSERVED_EXPANSION = local("HEXPOBS", "Hematoma expansion observed (> 6 mL or > 33 %)")
OBSERVED_EXPANSION_REVISED = local("HEXPREV", "Expansion, revised definition (volume or new/growing IVH)")
NOT_ASSESSABLE = local("NOTASSESS", "Not assessable")
FOLLOWUP_ROLE = local("FUROLE", "Role of this CT in the patient's follow-up")
FIRST_FOLLOWUP = local("FUFIRST", "First follow-up CT of the baseline")
LATER_FOLLOWUP = local("FULATER", "Later follow-up CT of the baseline")
BASELINE_REFERENCE = local("BASEREF", "Baseline CT and report")
BASELINE_PREDICTION = local("BASEPRED", "Expansion prediction at baseline")
FOLLOWUP_DECISION = local("FUNOTE", "Follow-up decision")
FOLLOWUP_COMPARISON_ALGORITHM = ("hemex follow-up comparison", "1.0.0")
