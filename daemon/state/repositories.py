"""Every repository, bound to one connection: what a transaction hands its caller.

``with db.transaction() as repos:`` then ``repos.jobs.enqueue(...)`` and
``repos.studies.record_event(...)`` commit together or not at all (a unit of work).
Repositories are made on first use, so a transaction pays only for those it touches.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Connection

from daemon.state.alert_repository import AlertRepository
from daemon.state.analysis_repository import AnalysisRepository
from daemon.state.clinical_repository import ClinicalRepository
from daemon.state.followup_repository import FollowupRepository
from daemon.state.hl7_message_repository import Hl7MessageRepository
from daemon.state.image_repository import ImageRepository
from daemon.state.job_repository import JobRepository
from daemon.state.lease_repository import LeaseRepository
from daemon.state.maintenance_repository import MaintenanceRepository
from daemon.state.monitoring_repository import MonitoringRepository
from daemon.state.outbox_repository import OutboxRepository
from daemon.state.result_repository import ResultRepository
from daemon.state.study_repository import StudyRepository


class Repositories:
    """The repositories of one open transaction (see ``Database.transaction``)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @cached_property
    def images(self) -> ImageRepository:
        return ImageRepository(self.connection)

    @cached_property
    def studies(self) -> StudyRepository:
        return StudyRepository(self.connection)

    @cached_property
    def jobs(self) -> JobRepository:
        return JobRepository(self.connection)

    @cached_property
    def analyses(self) -> AnalysisRepository:
        return AnalysisRepository(self.connection)

    @cached_property
    def results(self) -> ResultRepository:
        return ResultRepository(self.connection)

    @cached_property
    def outbox(self) -> OutboxRepository:
        return OutboxRepository(self.connection)

    @cached_property
    def alerts(self) -> AlertRepository:
        return AlertRepository(self.connection)

    @cached_property
    def hl7_messages(self) -> Hl7MessageRepository:
        return Hl7MessageRepository(self.connection)

    @cached_property
    def clinical(self) -> ClinicalRepository:
        return ClinicalRepository(self.connection)

    @cached_property
    def leases(self) -> LeaseRepository:
        return LeaseRepository(self.connection)

    @cached_property
    def maintenance(self) -> MaintenanceRepository:
        return MaintenanceRepository(self.connection)

    @cached_property
    def monitoring(self) -> MonitoringRepository:
        return MonitoringRepository(self.connection)

    @cached_property
    def followups(self) -> FollowupRepository:
        return FollowupRepository(self.connection)
