"""The follow-up SR (TID 1500 Measurement Report, Comprehensive 3D SR): what changed
between a baseline CT and this follow-up CT.

Built only from highdicom objects, in the follow-up's study. One TID 1411 group on the
follow-up's own SEG segment carries, for the hematoma (its tracking UID the baseline
report's, so viewers follow one lesion across the two studies): the follow-up volume
(its masking method and version), the baseline volume (the baseline's method and
version), the change in mL and per cent, the hours between the two CTs, and the
intraventricular volumes where the method measures them. The report-level "Qualitative
Evaluations" say whether expansion happened by the volume rule and by the revised
definition (yes, no, or not assessable), the role of this CT, every reason behind the
decision, the baseline's prediction and the baseline study and SR. The baseline SR and
CT images are referenced in the Pertinent Other Evidence Sequence; a report made again
(new pairing, a late procedure message) names the previous one as predecessor.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset

from daemon.config import ReportSettings
from daemon.report import codes
from daemon.report.seg_builder import hematoma_tracking_uid
from daemon.report.sr_builder import (
    NOT_VALIDATED_STATEMENT,
    MeasurementGroup,
    as_segmentation,
    document_attributes,
    observation_context,
    referenced_segment,
)
from daemon.report.uids import derived_uid
from domain.errors import ReportBuildError
from domain.followup import Role
from domain.outcomes import ObservedOutcome
from domain.study import CT_STORAGE_SOP_CLASSES

_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS
SERIES_DESCRIPTION = "hemex hematoma follow-up"


def followup_sr_series_uid(settings: ReportSettings, study_uid: str) -> str:
    """The follow-up SR series of ``study_uid`` (every follow-up report of it shares it)."""
    return str(derived_uid(settings, study_uid, "hemex-followup-sr-series"))


def build_followup_report(
    outcome: ObservedOutcome,
    series_uid: str,
    source_images: Sequence[Dataset],
    segmentation: Dataset | None,
    baseline_sr: Dataset,
    settings: ReportSettings,
    series_number: int,
    software_version: str,
    predecessor_sr: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the follow-up Measurement Report of ``outcome``.

    Parameters
    ----------
    outcome:
        The baseline, the follow-up and the observed change between them.
    series_uid:
        The analysed series of the follow-up study (its images are the evidence).
    source_images:
        Headers of the follow-up's analysed series.
    segmentation:
        The follow-up report's SEG (its segment is the measured region); None: a TID
        1501 group without a region.
    baseline_sr:
        The baseline's SR as it went to PACS; it and the CT images it references are
        recorded as other evidence.
    predecessor_sr:
        An earlier follow-up SR of this study that this one replaces.

    Raises
    ------
    ReportBuildError
        No source image of the series, the baseline SR of the same study, or highdicom
        refused an item.
    """
    evidence = [ds for ds in source_images if str(ds.SeriesInstanceUID) == series_uid]
    if not evidence:
        raise ReportBuildError("no source image belongs to the follow-up's analysed series")
    if str(baseline_sr.StudyInstanceUID) == outcome.followup_study_uid:
        raise ReportBuildError("the baseline SR belongs to the follow-up study itself")
    try:
        seg = as_segmentation(segmentation)
        report = hd.sr.MeasurementReport(
            observation_context=observation_context(settings),
            procedure_reported=codes.PROCEDURE_CT,
            imaging_measurements=[_group(outcome, seg, series_uid, settings)],
            title=codes.REPORT_TITLE,
        )
        report[0].ContentSequence.append(_evaluations(outcome, baseline_sr))
        return hd.sr.Comprehensive3DSR(
            evidence=[*evidence, *([seg] if seg is not None else []), baseline_sr,
                      *_baseline_images(baseline_sr)],
            content=report,
            series_instance_uid=followup_sr_series_uid(settings, outcome.followup_study_uid),
            series_number=series_number,
            is_complete=True,
            is_final=True,
            coding_schemes=[codes.LOCAL_SCHEME_IDENTIFICATION],
            **document_attributes(settings, software_version, SERIES_DESCRIPTION, predecessor_sr),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ReportBuildError(f"highdicom refused the follow-up SR: {exc}") from exc


def _baseline_images(baseline_sr: Dataset) -> list[Dataset]:
    """The CT images the baseline SR names as its evidence, as references (UIDs only)."""
    images = []
    for study in baseline_sr.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            for item in series.get("ReferencedSOPSequence", []):
                if str(item.ReferencedSOPClassUID) in CT_STORAGE_SOP_CLASSES:
                    ref = Dataset()
                    ref.StudyInstanceUID = study.StudyInstanceUID
                    ref.SeriesInstanceUID = series.SeriesInstanceUID
                    ref.SOPClassUID = item.ReferencedSOPClassUID
                    ref.SOPInstanceUID = item.ReferencedSOPInstanceUID
                    images.append(ref)
    return images


def _algorithm(name: str, version: str, *parameters: str) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=name, version=version, parameters=list(parameters) or None)


def _group(outcome: ObservedOutcome, seg: hd.seg.Segmentation | None, series_uid: str,
           settings: ReportSettings) -> MeasurementGroup:
    change = outcome.change
    method_name, method_version = outcome.followup_method_name, outcome.followup_method_version
    comparison = _algorithm(*codes.FOLLOWUP_COMPARISON_ALGORITHM, "follow-up minus baseline planimetric volume",
                            f"baseline measured by {outcome.method_name} {outcome.method_version}")
    measurements = [
        hd.sr.Measurement(name=codes.VOLUME, value=round(change.followup_ml, 3), unit=codes.MILLILITER,
                          method=codes.SUM_OF_SEGMENTED_VOXELS,
                          algorithm_id=_algorithm(method_name, method_version, "planimetry of the follow-up CT")),
        hd.sr.Measurement(name=codes.BASELINE_VOLUME, value=round(change.baseline_ml, 3), unit=codes.MILLILITER,
                          method=codes.SUM_OF_SEGMENTED_VOXELS,
                          algorithm_id=_algorithm(outcome.method_name, outcome.method_version,
                                                  f"planimetry of the baseline CT, study {outcome.baseline_handle}")),
        hd.sr.Measurement(name=codes.VOLUME_CHANGE, value=round(change.change_ml, 3), unit=codes.MILLILITER,
                          algorithm_id=comparison),
        hd.sr.Measurement(name=codes.TIME_SINCE_BASELINE, value=round(change.hours_between, 2), unit=codes.HOURS,
                          algorithm_id=comparison),
    ]
    if change.change_relative is not None:
        measurements.insert(3, hd.sr.Measurement(
            name=codes.VOLUME_CHANGE_RELATIVE, value=round(change.change_relative * 100.0, 1), unit=codes.PERCENT,
            algorithm_id=comparison))
    if change.followup_ivh_ml is not None and change.baseline_ivh_ml is not None:
        measurements += [
            hd.sr.Measurement(name=codes.IVH_VOLUME, value=round(change.followup_ivh_ml, 3), unit=codes.MILLILITER,
                              algorithm_id=_algorithm(method_name, method_version)),
            hd.sr.Measurement(name=codes.BASELINE_IVH_VOLUME, value=round(change.baseline_ivh_ml, 3),
                              unit=codes.MILLILITER,
                              algorithm_id=_algorithm(outcome.method_name, outcome.method_version)),
        ]
    common = {
        # The baseline report's tracking UID: the same hematoma, followed across studies.
        "tracking_identifier": hd.sr.TrackingIdentifier(
            uid=hematoma_tracking_uid(settings, outcome.baseline_study_uid), identifier="Intraparenchymal hematoma"),
        "finding_type": codes.HEMORRHAGE,
        "finding_sites": [hd.sr.FindingSite(codes.BRAIN)],
        "measurements": measurements,
    }
    if seg is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        referenced_segment=referenced_segment(seg, series_uid), **common)


def _label(value: bool | None) -> hd.sr.CodedConcept:
    return codes.NOT_ASSESSABLE if value is None else codes.YES if value else codes.NO


def _evaluations(outcome: ObservedOutcome, baseline_sr: Dataset) -> hd.sr.ContainerContentItem:
    change = outcome.change
    items: list[hd.sr.ContentItem] = [
        _code(codes.OBSERVED_EXPANSION, _label(change.expansion)),
        _code(codes.OBSERVED_EXPANSION_REVISED, _label(change.revised_expansion)),
        _code(codes.FOLLOWUP_ROLE, codes.FIRST_FOLLOWUP if outcome.role is Role.FOLLOWUP else codes.LATER_FOLLOWUP),
    ]
    items += [_text(codes.FOLLOWUP_DECISION, reason) for reason in change.reasons]
    if outcome.role is Role.LATER_FOLLOWUP:
        items.append(_text(codes.FOLLOWUP_DECISION, "a later follow-up: the first follow-up CT defines the"
                                                    " baseline's observed outcome, not this one"))
    items.append(_text(codes.BASELINE_REFERENCE,
                       f"study {outcome.baseline_study_uid}, SR {baseline_sr.SOPInstanceUID},"
                       f" acquired {outcome.baseline_acquired_at.isoformat(timespec='minutes')}"))
    items.append(_text(codes.BASELINE_PREDICTION, _prediction_text(outcome)))
    container = hd.sr.ContainerContentItem(name=codes.QUALITATIVE_EVALUATIONS, relationship_type=_CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _prediction_text(outcome: ObservedOutcome) -> str:
    p = outcome.prediction
    brain = "" if outcome.brain_points is None else f"; BRAIN score {outcome.brain_points} points"
    if p is None:
        return "no expansion probability at baseline" + brain
    validity = "" if p.clinically_validated else f" ({NOT_VALIDATED_STATEMENT})"
    return f"probability {p.probability:.2f} by {p.model_name} {p.model_version}{validity}{brain}"


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=_CONTAINS)


def _code(name: hd.sr.CodedConcept, value: hd.sr.CodedConcept) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type=_CONTAINS)
