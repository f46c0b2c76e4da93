"""The DICOM SR (TID 1500 Measurement Report, Comprehensive 3D SR) of one analysed study.

Built only from highdicom objects. "Imaging Measurements" holds one TID 1411 group per
algorithm, all on the hematoma's SEG segment and tracking UID (TID 1501 groups when no
SEG is given):

1. masking/measurement method: planimetric volume and ABC/2 volume;
1b. when the masking method separates them, one group per other class (intraventricular
   and extra-axial hemorrhage, perilesional oedema): its planimetric volume, on its own
   SEG segment and tracking UID;
2. expansion model (when one ran): predicted probability, model name/version and
   weights origin as Algorithm Identification;
3. BRAIN score (when its points are known): points and published risk.

The report-level "Qualitative Evaluations" container (sr_evaluations.py) carries the
risk category, the statement on the model's clinical validity, and the clinical
variables used and missing. Preliminary reports are CompletionFlag PARTIAL /
PreliminaryFlag PRELIMINARY; final ones COMPLETE / FINAL and name the preliminary in the
Predecessor Documents Sequence. Every report is UNVERIFIED: no person has checked it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom import Dataset

from daemon.config import ReportSettings
from daemon.report import codes
from daemon.report.seg_builder import (
    HEMATOMA,
    MANUFACTURER_MODEL_NAME,
    SEGMENT_NUMBER,
    SegmentClass,
    segment_classes,
    tracking_uid,
)
from daemon.report.sr_evaluations import (  # re-exported: the alert says the same
    NO_MODEL_STATEMENT,
    NOT_VALIDATED_STATEMENT,
    qualitative_evaluations,
)
from daemon.report.uids import derived_uid, new_uid, sr_series_uid
from domain.analysis import StudyAnalysis
from domain.brain_score import BrainScore
from domain.errors import ReportBuildError
from domain.redaction import mask_quoted

__all__ = ["NOT_VALIDATED_STATEMENT", "NO_MODEL_STATEMENT", "build_measurement_report"]

CHARACTER_SET = "ISO_IR 192"  # model cards and site names may carry non-ASCII text
BRAIN_SCORE_ALGORITHM = ("BRAIN score", "Wang 2015")

MeasurementGroup = (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def build_measurement_report(
    analysis: StudyAnalysis,
    source_images: Sequence[Dataset],
    segmentation: hd.seg.Segmentation | Dataset | None,
    settings: ReportSettings,
    predecessor_sr: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Measurement Report of ``analysis``.

    Parameters
    ----------
    analysis:
        The typed result; ``analysis.completion`` decides PARTIAL or COMPLETE.
    source_images:
        Images (headers suffice) of the analysed series, recorded as evidence; images of
        other series are ignored.
    segmentation:
        The SEG of the hematoma (a highdicom object or a dataset read back from disk);
        the measurement groups reference its segment. None: TID 1501 groups, no ROI.
    settings:
        UID root, series number, manufacturer, institution.
    predecessor_sr:
        The preliminary SR this report supersedes (Predecessor Documents Sequence).

    Returns
    -------
    highdicom.sr.Comprehensive3DSR

    Raises
    ------
    ReportBuildError
        When no source image belongs to the analysed series, the predecessor belongs to
        another study, or highdicom refuses a content item or the document.
    """
    evidence = [ds for ds in source_images if str(ds.SeriesInstanceUID) == analysis.series_uid]
    if not evidence:
        raise ReportBuildError("no source image belongs to the analysed series")
    study_uid = analysis.identity.study_uid
    if predecessor_sr is not None and str(predecessor_sr.StudyInstanceUID) != study_uid:
        raise ReportBuildError("the predecessor SR belongs to another study")
    try:
        seg = as_segmentation(segmentation)
        report = hd.sr.MeasurementReport(
            observation_context=observation_context(settings),
            procedure_reported=codes.PROCEDURE_CT,
            imaging_measurements=_measurement_groups(analysis, seg, settings),
            title=codes.REPORT_TITLE,
        )
        report[0].ContentSequence.append(qualitative_evaluations(analysis))
        final = analysis.completion == "COMPLETE"
        return hd.sr.Comprehensive3DSR(
            evidence=[*evidence, *([seg] if seg is not None else [])],
            content=report,
            series_instance_uid=sr_series_uid(settings, study_uid),
            series_number=settings.sr_series_number,
            is_complete=final,
            is_final=final,
            coding_schemes=[codes.LOCAL_SCHEME_IDENTIFICATION],
            **document_attributes(settings, analysis.software_version, "hemex hematoma report", predecessor_sr),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ReportBuildError(f"highdicom refused the SR: {mask_quoted(str(exc))}") from exc


def document_attributes(settings: ReportSettings, software_version: str, series_description: str,
                        predecessor_sr: Dataset | None) -> dict[str, Any]:
    """What every SR the node makes says about itself: a new SOP Instance UID numbered
    after its predecessor (which it names), this device and software version, UNVERIFIED
    (no person checked it), and the character set."""
    return {
        "sop_instance_uid": new_uid(settings),
        "instance_number": int(predecessor_sr.get("InstanceNumber", 1) or 1) + 1 if predecessor_sr is not None else 1,
        "previous_versions": [predecessor_sr] if predecessor_sr is not None else None,
        "manufacturer": settings.manufacturer,
        "manufacturer_model_name": MANUFACTURER_MODEL_NAME,
        "software_versions": software_version,
        "device_serial_number": settings.station_name,
        "institution_name": settings.institution_name or None,
        "is_verified": False,
        "series_description": series_description,
        "specific_character_set": CHARACTER_SET,
    }


def as_segmentation(segmentation: hd.seg.Segmentation | Dataset | None) -> hd.seg.Segmentation | None:
    if segmentation is None or isinstance(segmentation, hd.seg.Segmentation):
        return segmentation
    return hd.seg.Segmentation.from_dataset(segmentation, copy=False)


def device_observer(settings: ReportSettings) -> hd.sr.ObserverContext:
    """hemex as the observing device (the SR and the key-image document name it alike)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid(settings, "hemex-device", settings.station_name),
        name=settings.station_name,
        manufacturer_name=settings.manufacturer,
        model_name=MANUFACTURER_MODEL_NAME,
    )
    return hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=device,
    )


def observation_context(settings: ReportSettings) -> hd.sr.ObservationContext:
    return hd.sr.ObservationContext(observer_device_context=device_observer(settings))


def referenced_segment(seg: hd.seg.Segmentation, series_uid: str,
                       segment_number: int = SEGMENT_NUMBER) -> hd.sr.ReferencedSegment:
    """The SEG segment with the CT slices its frames were derived from.

    Built by hand: highdicom 0.28's ``ReferencedSegment.from_segmentation`` looks for the
    segment number only per frame, but with a single segment highdicom itself writes it
    to the shared functional groups.
    """
    sources: dict[str, hd.sr.SourceImageForSegmentation] = {}
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        identification = frame.get("SegmentIdentificationSequence", [])
        if identification and int(identification[0].ReferencedSegmentNumber) != segment_number:
            continue
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                uid = str(source.ReferencedSOPInstanceUID)
                sources.setdefault(uid, hd.sr.SourceImageForSegmentation(
                    referenced_sop_class_uid=str(source.ReferencedSOPClassUID),
                    referenced_sop_instance_uid=uid,
                ))
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=segment_number,
        source_images=list(sources.values()) or None,
        source_series=None if sources else hd.sr.SourceSeriesForSegmentation(series_uid),
    )


def _measurement_groups(
    analysis: StudyAnalysis, seg: hd.seg.Segmentation | None, settings: ReportSettings
) -> list[MeasurementGroup]:
    study_uid = analysis.identity.study_uid

    def group(measurements: list[hd.sr.Measurement], number: int = SEGMENT_NUMBER,
              segment: SegmentClass = HEMATOMA) -> MeasurementGroup:
        # Algorithm identification sits on each measurement (TID 300), not on the group:
        # pixelmed's TID 1411 has no group-level TID 4019 row.
        common: dict[str, Any] = {
            # A new TrackingIdentifier object per group: highdicom extends it into the group.
            "tracking_identifier": hd.sr.TrackingIdentifier(
                uid=tracking_uid(settings, study_uid, segment), identifier=segment.tracking_id),
            "finding_type": segment.property_type,
            "finding_sites": [hd.sr.FindingSite(codes.BRAIN)],
            "measurements": measurements,
        }
        if seg is None:
            return hd.sr.MeasurementsAndQualitativeEvaluations(**common)
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=referenced_segment(seg, analysis.series_uid, number), **common)

    groups = [group(_volume_measurements(analysis))]
    for number, segment, volume_ml in _other_classes(analysis):
        groups.append(group([_class_volume(analysis, segment, volume_ml)], number, segment))
    if analysis.prediction is not None:
        groups.append(group(_prediction_measurements(analysis)))
    score = analysis.brain_score
    if isinstance(score, BrainScore) and score.points is not None:
        groups.append(group(_brain_score_measurements(score)))
    return groups


def _other_classes(analysis: StudyAnalysis) -> list[tuple[int, SegmentClass, float]]:
    """(segment number, class, volume) of each class beside the hematoma that the masking
    method separated, numbered as the SEG numbers them (``segment_classes``)."""
    m = analysis.measurements
    volumes = {"intraventricular": m.intraventricular_volume_ml, "extra_axial": m.extra_axial_volume_ml,
               "perilesional_oedema": m.perilesional_oedema_volume_ml}
    numbered = segment_classes({name: volume is not None for name, volume in volumes.items()})
    return [(number, segment, float(volumes[segment.attribute] or 0.0))
            for number, segment in numbered if segment is not HEMATOMA]


def _class_volume(analysis: StudyAnalysis, segment: SegmentClass, volume_ml: float) -> hd.sr.Measurement:
    m = analysis.measurements
    return hd.sr.Measurement(
        name=codes.VOLUME,
        value=round(volume_ml, 3),
        unit=codes.MILLILITER,
        method=codes.SUM_OF_SEGMENTED_VOXELS,
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=m.method_name, version=m.method_version,
            parameters=[f"planimetry of the {segment.label.lower()} segment"]),
    )


def _volume_measurements(analysis: StudyAnalysis) -> list[hd.sr.Measurement]:
    m = analysis.measurements
    a, b, c = m.diameters_mm

    def algorithm(parameter: str) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=m.method_name, version=m.method_version, parameters=[parameter])

    return [
        hd.sr.Measurement(
            name=codes.VOLUME,
            value=round(float(m.volume_ml), 3),
            unit=codes.MILLILITER,
            method=codes.SUM_OF_SEGMENTED_VOXELS,
            algorithm_id=algorithm(f"planimetry: {m.voxel_count} voxels x voxel volume"),
        ),
        hd.sr.Measurement(
            name=codes.VOLUME_OF_ELLIPSOID,
            value=round(float(m.abc2_ml), 3),
            unit=codes.MILLILITER,
            algorithm_id=algorithm(f"ABC/2: A={a:.1f} mm, B={b:.1f} mm, C={c:.1f} mm"),
        ),
    ]


def _prediction_measurements(analysis: StudyAnalysis) -> list[hd.sr.Measurement]:
    prediction = analysis.prediction
    assert prediction is not None
    parameters = [f"weights origin: {prediction.weights_origin}"]
    if not prediction.clinically_validated:
        parameters.append(NOT_VALIDATED_STATEMENT)
    parameters.append("variables used: " + (", ".join(prediction.variables_used) or "none"))
    if prediction.variables_missing:
        parameters.append("variables missing: " + ", ".join(prediction.variables_missing))
    if prediction.image_only_fallback:
        parameters.append("image-only fallback model (clinical variables missing)")

    return [hd.sr.Measurement(
        name=codes.EXPANSION_PROBABILITY,
        value=round(float(prediction.probability) * 100.0, 2),
        unit=codes.PERCENT,
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=prediction.model_name, version=prediction.model_version, parameters=parameters),
    )]


def _brain_score_measurements(score: BrainScore) -> list[hd.sr.Measurement]:
    parameters = [f"reference: {score.reference}"]
    parameters += [f"{name}: {points} points" for name, points in sorted(score.components.items())]

    def algorithm() -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=BRAIN_SCORE_ALGORITHM[0], version=BRAIN_SCORE_ALGORITHM[1], parameters=parameters)

    measurements = [hd.sr.Measurement(
        name=codes.BRAIN_SCORE, value=int(score.points or 0), unit=codes.SCORE_POINTS,
        algorithm_id=algorithm(),
    )]
    if score.published_risk is not None:
        measurements.append(hd.sr.Measurement(
            name=codes.BRAIN_SCORE_PUBLISHED_RISK,
            value=_risk_percent(score.published_risk),
            unit=codes.PERCENT,
            algorithm_id=algorithm(),
        ))
    return measurements


def _risk_percent(risk: float) -> float:
    """The published BRAIN risk in percent, whether given as a fraction or a percentage.

    Unambiguous: the published table runs from 3.4 % to 85.8 %, so a fraction is <= 1
    and a percentage >= 3.4.
    """
    value = float(risk)
    return round(value * 100.0 if value <= 1.0 else value, 1)
