"""Wires the stages into one running node. No stage logic here.

receive (DICOM) -> assemble -> [jobs: analyse -> report -> dispatch] -> deliver
intake (HL7)    -> [job: clinical_update] -> analyse (finalise)
retention (scheduled)
"""

from __future__ import annotations

import logging
import signal
import tempfile
import time

from apscheduler.schedulers.background import BackgroundScheduler

from daemon.analyse.analyse_job import AnalyseStage
from daemon.analyse.clinical_update_job import ClinicalUpdateStage
from daemon.analyse.models import configured_masker, configured_predictor
from daemon.assemble.series_tracker import SeriesTracker
from daemon.audit_log import AuditLog
from daemon.config import Settings
from daemon.deliver.channels import build_channels, delivery_endpoints
from daemon.deliver.outbox import Outbox
from daemon.deliver.outbox_worker import OutboxWorker
from daemon.dispatch.dispatch_job import DispatchStage
from daemon.intake.hl7_intake import Hl7Intake
from daemon.jobs.runner import JobHandler, JobRunner
from daemon.jobs.wakeup import Wakeup
from daemon.ops.channel_security import plaintext_warnings
from daemon.ops.metrics import MetricsServer, start_metrics_server
from daemon.receive.association_server import GuardedAssociationServer
from daemon.receive.instance_store import InstanceStore
from daemon.receive.storage_scp import start_listener
from daemon.report.report_job import ReportStage
from daemon.retention.orphans import empty_tmp_dir, remove_orphan_temp_files
from daemon.retention.purge import purge_expired
from daemon.state.database import Database
from domain.durable_files import ensure_private_dir
from domain.jobs import JobKind

log = logging.getLogger(__name__)


class Node:
    """The running daemon: listeners, scheduler, job worker and outbox worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for folder in (settings.data_dir, settings.spool_dir, settings.results_dir, settings.log_dir,
                       settings.tmp_dir):
            ensure_private_dir(folder)
        self.db = Database(settings.database_path)
        self.audit = AuditLog(settings.log_dir)
        self.job_wakeup, self.outbox_wakeup = Wakeup(), Wakeup()
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.outbox = Outbox(self.db, settings.outbox, build_channels(settings), self.audit,
                             endpoints=delivery_endpoints(settings))
        self.outbox_worker = OutboxWorker(self.outbox, self.outbox_wakeup, settings.outbox.poll_interval_s)
        self.tracker = SeriesTracker(self.db, settings.series, self.job_wakeup)
        self.store = InstanceStore(self.db, settings.spool_dir, settings.dicom.min_free_disk_mb * 1024 * 1024,
                                   self.tracker)
        # The models are loaded once here and kept warm for every study.
        self.analyse = AnalyseStage(settings, self.db, configured_masker(settings), configured_predictor(settings),
                                    self.job_wakeup)
        self.report = ReportStage(settings, self.db, self.job_wakeup)
        self.dispatch = DispatchStage(settings, self.db, self.audit, self.outbox_wakeup)
        clinical = ClinicalUpdateStage(settings.hl7, self.db, self.job_wakeup)
        handlers: dict[JobKind, JobHandler] = {
            JobKind.ANALYSE_STUDY: self.analyse.analyse_study,
            JobKind.REPLAY_STUDY: self.analyse.replay_study,
            JobKind.FINALISE_STUDY: self.analyse.finalise_study,
            JobKind.CLINICAL_UPDATE: clinical.clinical_update,
            JobKind.REPORT_STUDY: self.report.report_study,
            JobKind.DISPATCH_REPORT: self.dispatch.dispatch_report,
        }
        self.runner = JobRunner(self.db, handlers, self.job_wakeup)
        self.hl7 = Hl7Intake(settings, self.db, self.audit, self.job_wakeup) if settings.hl7.enabled else None
        self._dicom_server: GuardedAssociationServer | None = None
        self._previous_tempdir: str | None = None
        self._metrics: MetricsServer | None = None
        self._stop_requested = False  # set by the SIGTERM/SIGINT handler
        self._signal_handlers_installed = False

    @property
    def dicom_port(self) -> int:
        assert self._dicom_server is not None, "node not started"
        return int(self._dicom_server.server_address[1])

    @property
    def metrics_port(self) -> int | None:
        """The bound port of /metrics and /healthz; None when metrics are disabled."""
        return self._metrics.port if self._metrics is not None else None

    def dicom_listener_alive(self) -> bool:
        """True while the DICOM listener's accept thread runs on an open socket (/healthz)."""
        server = self._dicom_server
        acceptor = server.acceptor_thread if server is not None else None
        return (server is not None and server.socket is not None and server.socket.fileno() >= 0
                and acceptor is not None and acceptor.is_alive())

    def start(self) -> None:
        """Resume unfinished work, then open the listeners."""
        for warning in plaintext_warnings(self.settings):
            log.warning("unencrypted channel: %s", warning)
        # Objects being received are written to the process's temporary folder by
        # pynetdicom (tempfile, process-wide): it is pointed into the private data
        # directory, on the spool's file system rather than a shared or RAM-backed /tmp,
        # and emptied here, before anything can be received into it.
        empty_tmp_dir(self.settings)
        self._previous_tempdir = tempfile.tempdir
        tempfile.tempdir = str(self.settings.tmp_dir)
        resumed = self.runner.resume_interrupted()
        reopened = self.tracker.resume_open_series()
        self.scheduler.start()
        self.scheduler.add_job(self.tracker.check_due, "interval", seconds=self.settings.series.check_interval_s,
                               id="series-completion", max_instances=1, coalesce=True)
        if self.settings.retention.enabled:
            self.scheduler.add_job(self.purge_expired, "interval", hours=self.settings.retention.interval_h,
                                   id="retention", max_instances=1, coalesce=True)
            self.scheduler.add_job(self.purge_expired, id="retention-at-start")
        self.scheduler.add_job(remove_orphan_temp_files, args=[self.settings], id="orphans-at-start")
        self.outbox_worker.start()
        self.runner.start()
        if self.hl7 is not None:
            self.hl7.start()
        self._dicom_server = start_listener(self.settings.dicom, self.store, self.audit)
        self._metrics = start_metrics_server(self.settings, self.db, self.dicom_listener_alive)
        log.info("node started resumed_jobs=%d open_series=%d dicom_port=%d", resumed, reopened, self.dicom_port)

    def purge_expired(self) -> None:
        """One retention pass (scheduled; its figures go to the metrics)."""
        purge_expired(self.db, self.settings, time.time())

    def stop(self) -> None:
        """Close the listeners first, then let running work finish."""
        if self._dicom_server is not None:
            self._dicom_server.shutdown()
        if self.hl7 is not None:
            self.hl7.stop()
        self.scheduler.shutdown(wait=True)
        self.runner.stop()
        self.outbox_worker.stop()
        # Last, so /healthz says 503 (listener closed) while running work drains.
        if self._metrics is not None:
            self._metrics.stop()
        self.audit.close()
        self.db.close()
        if tempfile.tempdir == str(self.settings.tmp_dir):
            tempfile.tempdir = self._previous_tempdir
        log.info("node stopped")

    def handle_shutdown_signals(self) -> None:
        """From now on SIGTERM and SIGINT ask the node to stop (main thread only).

        Called before ``start()``, so a node whose ports answer already honours them.
        """
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._request_stop)
        self._signal_handlers_installed = True

    def _request_stop(self, *_: object) -> None:
        # Only a flag: Event.set() here could deadlock on the Event's own lock if the
        # main thread is inside Event.wait() when the handler runs.
        self._stop_requested = True

    def wait_for_shutdown_signal(self) -> None:
        """Block until SIGTERM or SIGINT, then stop cleanly.

        The wait wakes every half second. The kernel may hand a process signal to any
        thread; its Python handler then runs only when the main thread next executes
        bytecode, which an untimed wait never does (``hemex serve`` slept through a
        SIGTERM sent right after start-up).
        """
        if not self._signal_handlers_installed:
            self.handle_shutdown_signals()
        while not self._stop_requested:
            time.sleep(0.5)
        self.stop()
