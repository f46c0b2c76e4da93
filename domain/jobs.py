"""The job kinds of the data path: each stage hands the next one a job row.

Every study job is keyed by its Study Instance UID, so a job queued again while it is
pending is one job, and one queued again while it runs runs once more afterwards.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobKind(str, enum.Enum):
    """What a job does; the stage module that runs it is named in the comment."""

    ANALYSE_STUDY = "analyse_study"      # daemon/analyse/analyse_job.py
    FINALISE_STUDY = "finalise_study"    # daemon/analyse/analyse_job.py (clinical data in)
    REPLAY_STUDY = "replay_study"        # daemon/analyse/analyse_job.py (hemex replay)
    REPORT_STUDY = "report_study"        # daemon/report/report_job.py
    DISPATCH_REPORT = "dispatch_report"  # daemon/dispatch/dispatch_job.py
    CLINICAL_UPDATE = "clinical_update"  # daemon/analyse/clinical_update_job.py (key: patient key)
    NOTIFY_NOT_ANALYSED = "notify_not_analysed"  # daemon/analyse/notice_job.py
    PAIR_FOLLOWUPS = "pair_followups"    # daemon/analyse/followup_pairing_job.py (any study of the patient)
    REPORT_FOLLOWUP = "report_followup"  # daemon/report/followup_report_job.py (key: the follow-up study)
    DISPATCH_FOLLOWUP = "dispatch_followup"  # daemon/dispatch/followup_dispatch_job.py (the follow-up)
    ESCALATE_ALERT = "escalate_alert"    # daemon/report/alert_escalation_job.py (key: alert group ref)


# The jobs whose failure for good leaves a study not analysed (and sends its notice).
STUDY_JOBS: frozenset[JobKind] = frozenset(
    {JobKind.ANALYSE_STUDY, JobKind.FINALISE_STUDY, JobKind.REPLAY_STUDY, JobKind.REPORT_STUDY,
     JobKind.DISPATCH_REPORT})


class JobState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """A claimed job: run it, then finish or fail it."""

    id: int
    kind: JobKind
    key: str
    attempts: int
