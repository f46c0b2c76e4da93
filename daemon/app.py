"""Wires the stages into one running node. No stage logic here."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from pynetdicom.transport import ThreadedAssociationServer

from daemon.analysis.analyse_study import StudyAnalyser
from daemon.analysis.job_runner import JobRunner
from daemon.analysis.publish_result import ResultPublisher
from daemon.analysis.study_jobs import StudyJobs
from daemon.assemble.series_tracker import SeriesTracker
from daemon.clinical.intake_service import ClinicalIntake
from daemon.config import Settings
from daemon.deliver.channels import build_channels
from daemon.deliver.outbox import Outbox
from daemon.metrics import MetricsServer, start_metrics_server
from daemon.receive.instance_store import InstanceStore
from daemon.receive.storage_scp import start_listener
from daemon.state.database import Database
from daemon.state.job_queue import JobQueue
from domain.durable_files import ensure_private_dir
from inference.masking.registry import create_masker
from inference.prediction import ExpansionPredictor

log = logging.getLogger(__name__)

OUTBOX_JOB = "outbox"


class Node:
    """The running daemon: listeners, scheduler, job worker and outbox."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for folder in (settings.data_dir, settings.spool_dir, settings.results_dir, settings.log_dir):
            ensure_private_dir(folder)
        self.db = Database(settings.database_path)
        self.jobs = JobQueue(self.db)
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.outbox = Outbox(self.db, settings.outbox, build_channels(settings))
        # Models are loaded once here and kept warm for every study.
        masker = create_masker(settings.masking.method, settings.masking.threshold)
        predictor = _expansion_predictor(settings)
        self.clinical = _clinical_intake(settings, self.db)
        self.analyser = StudyAnalyser(settings, self.db, masker, predictor,
                                      self.clinical.lookup if self.clinical else None)
        self.publisher = ResultPublisher(settings, self.db, self.outbox,
                                         self.clinical.result_writer(self.outbox) if self.clinical else None,
                                         on_published=self.wake_outbox)
        self.study_jobs = StudyJobs(settings, self.db, self.jobs, self.analyser, self.publisher)
        self.runner = JobRunner(self.jobs, self.study_jobs.handlers())
        self.tracker = SeriesTracker(self.db, self.jobs, self.scheduler, settings.series,
                                     on_study_queued=self.runner.wake)
        self.store = InstanceStore(self.db, settings.spool_dir, settings.dicom.min_free_disk_mb * 1024 * 1024,
                                   on_stored=self.tracker.instance_stored)
        self._dicom_server: ThreadedAssociationServer | None = None
        self._dicom_acceptor: threading.Thread | None = None
        self._metrics: MetricsServer | None = None
        self._stopped = threading.Event()
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
        server, acceptor = self._dicom_server, self._dicom_acceptor
        return (server is not None and server.socket is not None and server.socket.fileno() >= 0
                and acceptor is not None and acceptor.is_alive())

    def start(self) -> None:
        """Resume unfinished work, then open the listeners."""
        resumed = self.jobs.resume_interrupted()
        self.scheduler.start()
        reopened = self.tracker.resume_open_series()
        self.scheduler.add_job(self.outbox.deliver_due, "interval", seconds=self.settings.outbox.poll_interval_s,
                               id=OUTBOX_JOB, max_instances=1, coalesce=True)
        self.runner.start()
        if self.clinical is not None:
            self.clinical.start(on_studies_updated=self.study_jobs.clinical_data_arrived)
        threads_before = set(threading.enumerate())
        self._dicom_server = start_listener(self.settings.dicom, self.store)
        self._dicom_acceptor = _acceptor_thread(threads_before)
        self._metrics = start_metrics_server(self.settings, self.db, self.dicom_listener_alive)
        log.info("node started resumed_jobs=%d open_series=%d dicom_port=%d", resumed, reopened,
                 self.dicom_port)

    def wake_outbox(self) -> None:
        """Run a delivery pass now instead of at the next poll (results just queued)."""
        if self.scheduler.running and self.scheduler.get_job(OUTBOX_JOB) is not None:
            self.scheduler.modify_job(OUTBOX_JOB, next_run_time=datetime.now(timezone.utc))

    def stop(self) -> None:
        """Close the listeners first, then let running work finish."""
        if self._dicom_server is not None:
            self._dicom_server.shutdown()
        if self.clinical is not None:
            self.clinical.stop()
        self.scheduler.shutdown(wait=True)
        self.runner.stop()
        # Last, so /healthz says 503 (listener closed) while running work drains.
        if self._metrics is not None:
            self._metrics.stop()
        self._stopped.set()
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


def _acceptor_thread(threads_before: set[threading.Thread]) -> threading.Thread | None:
    """The thread pynetdicom just started to accept associations; it keeps no reference."""
    started = [thread for thread in threading.enumerate()
               if thread not in threads_before and thread.name.startswith("AcceptorServer")]
    return started[0] if started else None


def _expansion_predictor(settings: Settings) -> ExpansionPredictor | None:
    """The configured predictor, or None; Keras (and its backend) load only when needed."""
    weights = (settings.prediction.weights_path, settings.prediction.image_only_weights_path)
    if not settings.prediction.enabled or weights == (None, None):
        return None
    from inference.expansion_predictor import create_predictor

    return create_predictor(settings.prediction.predictor_options())


def _clinical_intake(settings: Settings, db: Database) -> ClinicalIntake | None:
    return ClinicalIntake(settings, db) if settings.hl7.enabled else None
