"""The HL7 side of the node as one object the daemon wires: the MLLP listener and the
worker that applies what it stored."""

from __future__ import annotations

import logging

from daemon.audit_log import AuditLog
from daemon.config import Settings
from daemon.intake.message_processor import MessageProcessor
from daemon.intake.mllp_server import MllpListener
from daemon.intake.observation_mapping import validate_local_code_map
from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database

log = logging.getLogger(__name__)


class Hl7Intake:
    """MLLP listener + apply worker.

    Raises
    ------
    ConfigurationError
        ``hl7.local_code_map`` names an unknown variable.
    """

    def __init__(self, settings: Settings, db: Database, audit: AuditLog, wakeup: Wakeup | None = None) -> None:
        validate_local_code_map(settings.hl7.local_code_map)
        self.processor = MessageProcessor(db, settings.hl7.local_code_map, wakeup)
        self.listener = MllpListener(settings.hl7, db, settings.data_dir, self.processor, audit)

    @property
    def port(self) -> int:
        return self.listener.port

    def start(self) -> None:
        """Apply messages left from the last run, then open the MLLP port."""
        resumed = self.processor.start()
        self.listener.start()
        log.info("hl7 intake started resumed_messages=%d", resumed)

    def stop(self) -> None:
        self.listener.stop()
        self.processor.stop()
