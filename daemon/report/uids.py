"""DICOM UIDs the node makes, all under the organisation root in ``settings.report.uid_root``.

Series UIDs are derived from the study (the same study always gets the same SR series
and the same SEG series, so a preliminary and a final report sit together in PACS);
instance UIDs are random, so every build is a new object.
"""

from __future__ import annotations

from pydicom.uid import UID, generate_uid

from daemon.config import ReportSettings


def new_uid(settings: ReportSettings) -> UID:
    """A fresh random UID under the configured root (checked when the settings loaded)."""
    return generate_uid(prefix=settings.uid_root)


def derived_uid(settings: ReportSettings, *parts: str) -> UID:
    """A UID under the configured root that is the same every time for the same ``parts``."""
    if not parts:
        raise ValueError("a derived UID needs at least one source value")
    return generate_uid(prefix=settings.uid_root, entropy_srcs=[settings.uid_root, *parts])


def sr_series_uid(settings: ReportSettings, study_uid: str) -> UID:
    """The SR series of ``study_uid`` (preliminary and final reports share it)."""
    return derived_uid(settings, study_uid, "hemex-sr-series")


def seg_series_uid(settings: ReportSettings, study_uid: str) -> UID:
    """The SEG series of ``study_uid``."""
    return derived_uid(settings, study_uid, "hemex-seg-series")
