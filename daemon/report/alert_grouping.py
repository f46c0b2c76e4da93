"""Which alert group a new alert of a study joins: the patient's unacknowledged group
(first alert at most ``merge_window_h`` old), else a new one.

Decided by the report stage, which writes the group's code and link into the alert's
files; dispatch then records the alert in that group (``dispatch/alert_queue.py``). A
group acknowledged between the two reopens when the new alert joins it.
"""

from __future__ import annotations

from daemon.alert_links import AlertLinks
from daemon.config import AcknowledgementSettings
from daemon.state.database import Database
from daemon.state.patient_studies import studies_of_same_patient
from domain.alerts import AlertAcknowledgement
from domain.study import StudyIdentity


def acknowledgement_for(db: Database, identity: StudyIdentity, links: AlertLinks,
                        settings: AcknowledgementSettings, now: float) -> AlertAcknowledgement:
    """The group a new alert about ``identity``'s study joins, with a fresh link."""
    with db.reading() as repos:
        studies = [s.study_uid for s in studies_of_same_patient(repos, identity)]
        group = repos.alerts.open_group_of(studies, now - settings.merge_window_h * 3600.0)
    return links.for_group(group.ref) if group is not None else links.new_group()
