"""The report-level "Qualitative Evaluations" container of the SR (TID 1500 row 12).

Holds what is not a measurement of the hematoma: the expansion risk category and the
statement on the model's clinical validity, the clinical variables used (coded yes/no
values, numeric values as "value unit" text under their LOINC names) and those missing.
"""

from __future__ import annotations

from datetime import datetime

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.sr.coding import Code

from daemon.report import codes
from domain.analysis import StudyAnalysis
from domain.brain_score import BrainScore
from domain.clinical import PREDICTOR_VARIABLES
from domain.prediction import NO_MODEL_CONFIGURED

NOT_VALIDATED_STATEMENT = "not clinically validated - not for clinical decisions"
# Each way the input lies outside what the model's publication validated, in words.
OUTSIDE_DOMAIN_PREFIX = "input outside the published domain: "
NO_MODEL_STATEMENT = NO_MODEL_CONFIGURED

_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS

_RISK_VALUES: dict[str, CodedConcept | Code] = {
    "high": codes.HIGH_RISK,
    "low": codes.LOW_RISK,
    "not_validated": codes.NOT_CLINICALLY_VALIDATED,
    "unavailable": codes.NO_VALIDATED_MODEL,
}


def model_statements(analysis: StudyAnalysis) -> list[str]:
    """What the report must say about the expansion model, in plain words."""
    prediction = analysis.prediction
    if prediction is None:
        return [analysis.prediction_unavailable or NO_MODEL_STATEMENT]
    if not prediction.clinically_validated:
        return [NOT_VALIDATED_STATEMENT]
    return []


def qualitative_evaluations(analysis: StudyAnalysis) -> hd.sr.ContainerContentItem:
    """The TID 1500 row 12 container for ``analysis``."""
    items: list[hd.sr.ContentItem] = [
        _code(codes.EXPANSION_RISK_CATEGORY, _RISK_VALUES[analysis.risk_category]),
    ]
    items += [_text(codes.MODEL_STATEMENT, s) for s in model_statements(analysis)]
    if analysis.prediction is not None:
        items.append(_text(codes.EXPANSION_MODEL_WEIGHTS, analysis.prediction.weights_origin))
        items += [_text(codes.MODEL_STATEMENT, note) for note in analysis.prediction.notes]
        items += [_text(codes.MODEL_STATEMENT, f"{OUTSIDE_DOMAIN_PREFIX}{reason}")
                  for reason in analysis.prediction.outside_published_domain]
    # The masking method's own statements (a learned model: origin, training data,
    # validation), so that every volume names what made it and how far it can be trusted.
    items += [_text(codes.MODEL_STATEMENT, f"hematoma masking: {note}")
              for note in analysis.measurements.method_notes]
    if analysis.measurements.intraventricular_extension is not None:
        items.append(_code(codes.INTRAVENTRICULAR_EXTENSION,
                           codes.YES if analysis.measurements.intraventricular_extension else codes.NO))
    items += _clinical_items(analysis)
    items += _brain_score_items(analysis.brain_score)
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=_CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def missing_variables(analysis: StudyAnalysis) -> list[str]:
    """Predictor variables without a value, plus any the predictor itself reported missing."""
    missing = list(analysis.clinical.missing(PREDICTOR_VARIABLES))
    if analysis.prediction is not None:
        missing += [n for n in analysis.prediction.variables_missing if n not in missing]
    return missing


def _clinical_items(analysis: StudyAnalysis) -> list[hd.sr.ContentItem]:
    items: list[hd.sr.ContentItem] = []
    for name, value in analysis.clinical.present().items():
        if name in codes.BOOLEAN_VARIABLES:
            items.append(_code(codes.BOOLEAN_VARIABLES[name], codes.YES if value else codes.NO))
        elif name == "sex" and str(value).upper()[:1] in codes.SEX_VALUES:
            items.append(_code(codes.SEX, codes.SEX_VALUES[str(value).upper()[:1]]))
        elif name in codes.NUMERIC_VARIABLES:
            concept, unit = codes.NUMERIC_VARIABLES[name]
            items.append(_text(concept, f"{_number(value)} {unit.value}"))
        elif isinstance(value, datetime):
            items.append(_text(codes.variable_concept(name), value.isoformat(timespec="minutes")))
        else:
            items.append(_text(codes.variable_concept(name), str(value)))
    for name in missing_variables(analysis):
        concept = codes.variable_concept(name)
        items.append(_text(codes.CLINICAL_VARIABLE_MISSING,
                           f"{name} ({concept.scheme_designator} {concept.value} {concept.meaning})"))
    return items


def _brain_score_items(score: object | None) -> list[hd.sr.ContentItem]:
    if not isinstance(score, BrainScore):
        return [_text(codes.MODEL_STATEMENT, "BRAIN score not computed")]
    items: list[hd.sr.ContentItem] = [
        _text(codes.BRAIN_SCORE_COMPONENT_MISSING, name) for name in score.missing
    ]
    if score.points is None:
        items.append(_text(codes.MODEL_STATEMENT,
                           "BRAIN score not computed: " + (", ".join(score.missing) or "unknown") + " missing"))
    return items


def _number(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else f"{number:g}"


def _text(name: CodedConcept | Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=_CONTAINS)


def _code(name: CodedConcept | Code, value: CodedConcept | Code) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type=_CONTAINS)
