"""The "not analysed" notice as a DICOM Comprehensive SR, so that PACS viewers show in
the study itself that this CT was not analysed, and why.

A plain document (no template claimed: TID 1500 needs measurements, and there are none):
a "Diagnostic imaging report" container (LN 18748-4) observed by the hemex device, with
a Conclusions section (DCM 121076) holding the headline and reason, and a Findings
section (DCM 121070) with one line per series received and why it was not analysed.
COMPLETE and UNVERIFIED; a later notice or report names it as predecessor.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom import Dataset

from daemon.config import ReportSettings
from daemon.report.sr_builder import device_observer, document_attributes
from daemon.report.uids import sr_series_uid
from domain.errors import ReportBuildError
from domain.notice import NotAnalysedNotice

DIAGNOSTIC_IMAGING_REPORT = CodedConcept("18748-4", "LN", "Diagnostic imaging report")
FINDINGS = CodedConcept("121070", "DCM", "Findings")
FINDING = CodedConcept("121071", "DCM", "Finding")
CONCLUSIONS = CodedConcept("121076", "DCM", "Conclusions")
CONCLUSION = CodedConcept("121077", "DCM", "Conclusion")
SERIES_DESCRIPTION = "hemex: CT not analysed"

_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def notice_lines(notice: NotAnalysedNotice) -> list[str]:
    """The notice's conclusion lines, as the SR, the ORU and the alert say them."""
    return [
        notice.headline + ".",
        f"Reason: {notice.reason}.",
        "No hematoma volume or expansion risk is available from hemex for this study: read the images.",
        (f"hemex {notice.software_version}. Images that arrive later are still analysed, and the"
        " report then replaces this notice."),
    ]


def series_lines(notice: NotAnalysedNotice) -> list[str]:
    """One line per series received."""
    return [f"Series {s.series_number or '?'} '{s.description or '(no description)'}', {s.image_count} images:"
            f" {s.outcome}" for s in notice.series] or ["No complete series was received."]


def build_not_analysed_sr(notice: NotAnalysedNotice, evidence: Sequence[Dataset], settings: ReportSettings,
                          predecessor_sr: Dataset | None = None) -> hd.sr.ComprehensiveSR:
    """The notice SR; ``evidence`` holds one image header of each series received.

    Raises
    ------
    ReportBuildError
        No evidence, a predecessor of another study, or highdicom refused the document.
    """
    if not evidence:
        raise ReportBuildError("a notice needs at least one received image as evidence")
    study_uid = notice.identity.study_uid
    if predecessor_sr is not None and str(predecessor_sr.StudyInstanceUID) != study_uid:
        raise ReportBuildError("the predecessor SR belongs to another study")
    try:
        root = hd.sr.ContainerContentItem(name=DIAGNOSTIC_IMAGING_REPORT, is_content_continuous=False)
        context = hd.sr.ObservationContext(observer_device_context=device_observer(settings))
        items: list[hd.sr.ContentItem] = [item for item in context]
        items.append(_section(CONCLUSIONS, CONCLUSION, notice_lines(notice)))
        items.append(_section(FINDINGS, FINDING, series_lines(notice)))
        root.ContentSequence = hd.sr.ContentSequence(items)
        return hd.sr.ComprehensiveSR(
            evidence=list(evidence),
            content=root,
            series_instance_uid=sr_series_uid(settings, study_uid),
            series_number=settings.sr_series_number,
            is_complete=True,
            is_final=True,
            **document_attributes(settings, notice.software_version, SERIES_DESCRIPTION, predecessor_sr),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ReportBuildError(f"highdicom refused the notice SR: {exc}") from exc


def _section(name: CodedConcept, item_name: CodedConcept, lines: list[str]) -> hd.sr.ContainerContentItem:
    section = hd.sr.ContainerContentItem(name=name, relationship_type=_CONTAINS)
    section.ContentSequence = hd.sr.ContentSequence(
        [hd.sr.TextContentItem(name=item_name, value=line[:1024], relationship_type=_CONTAINS) for line in lines])
    return section
