"""DICOM UIDs the node makes, all under the organisation root in ``settings.report.uid_root``.

Series UIDs are derived from the study (the same study always gets the same SR series
and the same SEG series, so a preliminary and a final report sit together in PACS);
instance UIDs are random, so every build is a new object.
"""

from __future__ import annotations

from pydicom.uid import UID, generate_uid

from daemon.config import ReportSettings
from domain.errors import ReportBuildError

# pydicom's generate_uid accepts prefixes up to 54 characters (a UID is at most 64).
_MAX_PREFIX_LENGTH = 54


def _prefix(settings: ReportSettings) -> str:
    root = settings.uid_root.strip()
    if not root.endswith("."):
        root += "."
    if len(root) > _MAX_PREFIX_LENGTH or not all(part.isdigit() for part in root[:-1].split(".")):
        raise ReportBuildError(
            f"report.uid_root must be dotted digits of at most {_MAX_PREFIX_LENGTH} characters,"
            f" got {settings.uid_root!r}"
        )
    return root


def new_uid(settings: ReportSettings) -> UID:
    """A fresh random UID under the configured root.

    Raises
    ------
    ReportBuildError
        When ``uid_root`` is not a valid UID prefix.
    """
    return generate_uid(prefix=_prefix(settings))


def derived_uid(settings: ReportSettings, *parts: str) -> UID:
    """A UID under the configured root that is the same every time for the same ``parts``.

    Raises
    ------
    ReportBuildError
        When ``uid_root`` is not a valid UID prefix.
    """
    if not parts:
        raise ReportBuildError("a derived UID needs at least one source value")
    return generate_uid(prefix=_prefix(settings), entropy_srcs=[_prefix(settings), *parts])


def sr_series_uid(settings: ReportSettings, study_uid: str) -> UID:
    """The SR series of ``study_uid`` (preliminary and final reports share it)."""
    return derived_uid(settings, study_uid, "hemex-sr-series")


def seg_series_uid(settings: ReportSettings, study_uid: str) -> UID:
    """The SEG series of ``study_uid``."""
    return derived_uid(settings, study_uid, "hemex-seg-series")
