"""DICOM dates and times (DA, TM, DT) as naive local datetimes: the node's one parser."""

from __future__ import annotations

import re
from datetime import datetime

# YYYYMMDD[HH[MM[SS[.F{1,6}]]]] with an optional UTC offset (DT), which is dropped:
# DICOM acquisition times are local times, the zone HL7 times are converted to.
_DICOM_DATETIME = re.compile(r"(\d{8})(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?(?:[+-]\d{4})?")


def parse_dicom_datetime(text: str | None) -> datetime | None:
    """A DICOM DT, or a DA followed by a TM (``StudyDate + StudyTime``); None if unusable."""
    match = _DICOM_DATETIME.fullmatch((text or "").strip())
    if not match:
        return None
    day, hour, minute, second, fraction = match.groups()
    try:
        value = datetime.strptime(day + (hour or "00") + (minute or "00") + (second or "00"), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return value.replace(microsecond=int((fraction or "0").ljust(6, "0")))


def first_datetime(*candidates: str | None) -> datetime | None:
    """The first of ``candidates`` that parses (e.g. acquisition, then series, then study)."""
    for text in candidates:
        value = parse_dicom_datetime(text)
        if value is not None:
            return value
    return None
