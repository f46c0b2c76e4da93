"""A study the node could not analyse, as its "not analysed" notice states it.

Peers (commercial ICH tools) answer every study: a result, or a notice that says the CT
was not analysed and why, so that no doctor waits for a result that will not come.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.study import StudyIdentity, StudyState


@dataclass(frozen=True)
class SeriesReceived:
    """One series of the study, and why it was not analysed. May carry PHI-free text
    from the images (series description): for clinical systems, never for the log."""

    series_number: str
    description: str
    image_count: int
    outcome: str


@dataclass(frozen=True)
class NotAnalysedNotice:
    """Why a study was not analysed (``no_series`` or ``failed``), series by series."""

    identity: StudyIdentity
    state: StudyState
    reason: str
    series: tuple[SeriesReceived, ...]
    software_version: str

    @property
    def headline(self) -> str:
        """One line for a list, a subject or an OBX: what happened, in plain words."""
        if self.state is StudyState.NO_SERIES:
            return "CT not analysed: no axial non-contrast soft-tissue head CT series was received"
        return "CT not analysed: the analysis failed"
