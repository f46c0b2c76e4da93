"""Wires the stages into one running node. No stage logic here.

receive (DICOM) -> assemble -> [jobs: analyse -> report -> dispatch] -> deliver
                   dispatch -> [jobs: pair_followups -> report_followup -> dispatch_followup]
                   dispatch -> [job: escalate_alert, due when unacknowledged]
intake (HL7)    -> [job: clinical_update] -> analyse (finalise), pair_followups
retention, site-performance drift check (scheduled)

A node runs every stage (role ``all``) or some of them, against a database it may share
with other nodes (PostgreSQL, docs/deploy-ha.md): ``receive`` (DICOM and HL7 listeners,
series completion), ``analyse`` (the job runner: analysis, report, dispatch) and
``deliver`` (the outbox, the retention purge and the site-performance drift check).
"""

from __future__ import annotations

import enum
import errno
import logging
import signal
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Blueprint

from daemon.alert_links import ACK_PATH, AlertLinks
from daemon.analyse.analyse_job import AnalyseStage
from daemon.analyse.clinical_update_job import ClinicalUpdateStage
from daemon.analyse.followup_pairing_job import FollowupPairingStage
from daemon.analyse.models import configured_masker, configured_predictor
from daemon.analyse.notice_job import NoticeStage
from daemon.assemble.series_tracker import SeriesTracker
from daemon.audit_log import AuditLog
from daemon.config import Settings
from daemon.console.accounts import AccountsFile
from daemon.console.blueprint import ConsoleDependencies, console_blueprint
from daemon.console.session_key import load_or_create_session_key
from daemon.deliver.channels import build_channels, delivery_endpoints
from daemon.deliver.outbox import Outbox
from daemon.deliver.outbox_worker import OutboxWorker
from daemon.dispatch.dispatch_job import DispatchStage
from daemon.dispatch.followup_dispatch_job import FollowupDispatchStage
from daemon.intake.hl7_intake import Hl7Intake
from daemon.jobs.runner import JobHandler, JobRunner
from daemon.jobs.wakeup import Wakeup
from daemon.ops.alert_acknowledgement import AcknowledgementApp
from daemon.ops.channel_security import plaintext_warnings
from daemon.ops.metrics import metrics_blueprint
from daemon.ops.performance_drift import check_drift
from daemon.receive.association_server import GuardedAssociationServer
from daemon.receive.instance_store import InstanceStore
from daemon.receive.storage_scp import start_listener
from daemon.report.alert_escalation_job import AlertEscalationStage
from daemon.report.followup_report_job import FollowupReportStage
from daemon.report.report_job import ReportStage
from daemon.report.standard_tables import load_highdicom_tables
from daemon.report.warm_validator import WarmSrValidator
from daemon.retention.orphans import prepare_receive_tmp_dir, remove_orphan_temp_files
from daemon.retention.purge import purge_expired
from daemon.state.database import Database
from daemon.web.app_factory import build_web_app, wsgi_blueprint
from daemon.web.server import WebServer, start_web_server
from domain.durable_files import ensure_private_dir
from domain.errors import ListenerPortError
from domain.jobs import JobKind

log = logging.getLogger(__name__)


class Role(str, enum.Enum):
    """What a node does; several nodes on one database may each take some."""

    RECEIVE = "receive"
    ANALYSE = "analyse"
    DELIVER = "deliver"
    ALL = "all"


# A retention pass (or a drift check) holds this lease, so that one node at a time runs it.
_RETENTION_LEASE_S = 3600.0


class Node:
    """The running daemon: listeners, scheduler, job worker and outbox worker (those of
    its roles)."""

    def __init__(self, settings: Settings, roles: frozenset[Role] = frozenset({Role.ALL})) -> None:
        self.settings = settings
        self.roles = frozenset(Role) if Role.ALL in roles else roles
        for folder in (settings.data_dir, settings.spool_dir, settings.results_dir, settings.log_dir):
            ensure_private_dir(folder)
        self.db = Database.for_settings(settings)
        self.audit = AuditLog(settings.log_dir)
        self.job_wakeup, self.outbox_wakeup = Wakeup(), Wakeup()
        self.scheduler = BackgroundScheduler(timezone="UTC")
        owner = settings.node_name
        self.outbox = Outbox(self.db, settings.outbox, build_channels(settings), self.audit, owner=owner,
                             lease_s=max(300.0, settings.cluster.lease_s), endpoints=delivery_endpoints(settings))
        self.outbox_worker = OutboxWorker(self.outbox, self.outbox_wakeup, settings.outbox.poll_interval_s)
        self.tracker = SeriesTracker(self.db, settings.series, self.job_wakeup, selection=settings.selection)
        # Signs acknowledgement links; made (and the node key with it) before any alert.
        self.alert_links = AlertLinks.from_settings(settings)
        self.store = InstanceStore(self.db, settings.spool_dir, settings.dicom.min_free_disk_mb * 1024 * 1024,
                                   self.tracker, durability=settings.dicom.durability,
                                   write_back_interval_s=settings.dicom.write_back_interval_s)
        report_settings = settings.report
        self.sr_validator = (WarmSrValidator() if Role.ANALYSE in self.roles and report_settings.validate_with_dicom3tools
                             and report_settings.warm_sr_validator else None)
        self.runner = JobRunner(self.db, self._job_handlers() if Role.ANALYSE in self.roles else {},
                                self.job_wakeup, owner=owner, lease_s=settings.cluster.lease_s, idle_poll_s=0.5)
        receives = Role.RECEIVE in self.roles
        self.hl7 = (Hl7Intake(settings, self.db, self.audit, self.job_wakeup)
                    if settings.hl7.enabled and receives else None)
        self._dicom_server: GuardedAssociationServer | None = None
        self._previous_tempdir: str | None = None
        self._receive_tmp_dir: str | None = None
        self._http: WebServer | None = None
        self._stop_requested = False  # set by the SIGTERM/SIGINT handler
        self._signal_handlers_installed = False

    def _job_handlers(self) -> dict[JobKind, JobHandler]:
        """The stages the job runner runs; the models are loaded here, once, and kept warm."""
        settings = self.settings
        analyse = AnalyseStage(settings, self.db, configured_masker(settings), configured_predictor(settings),
                               self.job_wakeup)
        report = ReportStage(settings, self.db, self.job_wakeup, links=self.alert_links,
                             sr_validator=self.sr_validator)
        dispatch = DispatchStage(settings, self.db, self.audit, self.outbox_wakeup)
        clinical = ClinicalUpdateStage(settings.hl7, self.db, self.job_wakeup, pair_followups=settings.followup.enabled)
        notice = NoticeStage(settings, self.db, self.audit, self.outbox_wakeup, sr_validator=self.sr_validator)
        pairing = FollowupPairingStage(settings.followup, self.db, self.job_wakeup)
        followup_report = FollowupReportStage(settings, self.db, self.job_wakeup, links=self.alert_links)
        followup_dispatch = FollowupDispatchStage(settings, self.db, self.audit, self.outbox_wakeup)
        escalation = AlertEscalationStage(settings, self.db, self.outbox_wakeup)
        return {
            JobKind.ANALYSE_STUDY: analyse.analyse_study,
            JobKind.REPLAY_STUDY: analyse.replay_study,
            JobKind.FINALISE_STUDY: analyse.finalise_study,
            JobKind.CLINICAL_UPDATE: clinical.clinical_update,
            JobKind.REPORT_STUDY: report.report_study,
            JobKind.DISPATCH_REPORT: dispatch.dispatch_report,
            JobKind.NOTIFY_NOT_ANALYSED: notice.notify_not_analysed,
            JobKind.PAIR_FOLLOWUPS: pairing.pair_followups,
            JobKind.REPORT_FOLLOWUP: followup_report.report_followup,
            JobKind.DISPATCH_FOLLOWUP: followup_dispatch.dispatch_followup,
            JobKind.ESCALATE_ALERT: escalation.escalate_alert,
        }

    def _newest_report_sr(self) -> Path | None:
        """The SR file of the last report this node (or a peer on a shared disk) made,
        to warm the SR validator with; None on a new node or once retention removed it."""
        with self.db.reading() as repos:
            newest = repos.results.newest()
        return newest.sr_path if newest is not None and newest.sr_path.is_file() else None

    @property
    def dicom_port(self) -> int:
        assert self._dicom_server is not None, "node not started"
        return int(self._dicom_server.server_address[1])

    @property
    def metrics_port(self) -> int | None:
        """The bound port of the HTTP server (/metrics, /healthz, the console); None when
        it is disabled or could not bind."""
        return self._http.port if self._http is not None else None

    def dicom_listener_alive(self) -> bool:
        """True while the DICOM listener's accept thread runs on an open socket (/healthz);
        always True on a node without the receive role (it has no listener to lose)."""
        if Role.RECEIVE not in self.roles:
            return True
        server = self._dicom_server
        acceptor = server.acceptor_thread if server is not None else None
        return (server is not None and server.socket is not None and server.socket.fileno() >= 0
                and acceptor is not None and acceptor.is_alive())

    def start(self) -> None:
        """Resume unfinished work, then open the listeners (of this node's roles)."""
        for warning in plaintext_warnings(self.settings):
            log.warning("unencrypted channel: %s", warning)
        self.scheduler.start()
        # Temporary files of atomic writes that a crash left behind (their process is gone):
        # a one-off job, so a large spool does not delay the listeners.
        self.scheduler.add_job(remove_orphan_temp_files, args=[self.settings], id="orphans-at-start")
        if Role.ANALYSE in self.roles:
            if self.sr_validator is not None:
                self.sr_validator.start(warm_up_with=self._newest_report_sr())  # while the node opens
            self.scheduler.add_job(load_highdicom_tables, id="highdicom-tables-at-start")
            resumed = self.runner.resume_interrupted()
            self.runner.start()
            log.info("job runner started node=%s resumed_jobs=%d", self.settings.node_name, resumed)
        if Role.DELIVER in self.roles:
            self.outbox_worker.start()
            if self.settings.retention.enabled:
                self.scheduler.add_job(self.purge_expired, "interval", hours=self.settings.retention.interval_h,
                                       id="retention", max_instances=1, coalesce=True)
                self.scheduler.add_job(self.purge_expired, id="retention-at-start")
            self.scheduler.add_job(self.check_performance, "interval", hours=self.settings.performance.check_interval_h,
                                   id="site-performance", max_instances=1, coalesce=True)
            self.scheduler.add_job(self.check_performance, id="site-performance-at-start")
        if Role.RECEIVE in self.roles:
            reopened = self.tracker.resume_open_series()
            self.scheduler.add_job(self.tracker.check_due, "interval",
                                   seconds=self.settings.series.check_interval_s, id="series-completion",
                                   max_instances=1, coalesce=True)
            if self.hl7 is not None:
                with _binding("hl7.port", self.settings.hl7.host, self.settings.hl7.port):
                    self.hl7.start()
            self._use_receive_tmp_dir()
            with _binding("dicom.port", self.settings.dicom.host, self.settings.dicom.port):
                self._dicom_server = start_listener(self.settings.dicom, self.store, self.audit,
                                                   on_release=self.tracker.association_released)
            log.info("receiving open_series=%d dicom_port=%d", reopened, self.dicom_port)
        self._http = self._start_http_server()
        if self.settings.alerts.roster and not self.settings.alerts.acknowledgement.public_url:
            log.warning("alerts escalate but carry no acknowledgement link: set [alerts.acknowledgement]"
                        " public_url (until then staff acknowledge with hemex alerts --ack CODE)")
        log.info("node started node=%s roles=%s database=%s", self.settings.node_name,
                 ",".join(sorted(r.value for r in self.roles)), self.db.description)

    def _use_receive_tmp_dir(self) -> None:
        """Point the process's temporary folder (tempfile: process-wide) into the data
        directory, where pynetdicom writes objects as they arrive: on the spool's file
        system (an object is moved, not copied, into the spool) rather than a shared or
        RAM-backed /tmp. Each process has its own folder (the data directory may be shared
        by nodes); those of processes that are gone are removed first."""
        folder = prepare_receive_tmp_dir(self.settings)
        self._previous_tempdir, self._receive_tmp_dir = tempfile.tempdir, str(folder)
        tempfile.tempdir = str(folder)

    def web_blueprints(self) -> list[Blueprint]:
        """Every module's routes on the node's HTTP server: the route registry.

        A module that serves something over HTTP adds its blueprint here.
        """
        settings = self.settings
        blueprints = []
        if settings.metrics.enabled:
            blueprints.append(metrics_blueprint(self.db, settings.data_dir, settings.dicom.min_free_disk_mb * 2**20,
                                                self.dicom_listener_alive))
        if settings.console.enabled:
            accounts = AccountsFile(settings.console_accounts_path) if settings.console.auth == "accounts" else None
            blueprints.append(console_blueprint(ConsoleDependencies(
                settings=settings, db=self.db, audit=self.audit, accounts=accounts,
                deliver_now=self.outbox_wakeup.notify)))
        if settings.alerts.acknowledgement.public_url:  # alerts carry links: serve them
            # Signed tokens; their own GET page and POST form (no console login or token).
            blueprints.append(wsgi_blueprint("alert_ack", ACK_PATH, AcknowledgementApp(self.db, self.alert_links)))
        return blueprints

    def _start_http_server(self) -> WebServer | None:
        blueprints = self.web_blueprints()
        if not blueprints:
            return None
        console = self.settings.console
        app = build_web_app(blueprints, load_or_create_session_key(self.settings.data_dir),
                            secure_cookies=console.secure_cookies, session_hours=console.session_hours)
        return start_web_server(self.settings.metrics.host, self.settings.metrics.port, app)

    def purge_expired(self) -> None:
        """One retention pass, by one node at a time (its figures go to the metrics)."""
        now, owner = time.time(), self.settings.node_name
        with self.db.transaction() as repos:
            held = repos.leases.try_acquire("retention", owner, now, _RETENTION_LEASE_S)
        if not held:
            log.info("retention skipped: another node is purging")
            return
        try:
            purge_expired(self.db, self.settings, now)
        finally:
            with self.db.transaction() as repos:
                repos.leases.release("retention", owner)

    def check_performance(self) -> None:
        """One drift check of the site's observed accuracy, by one node at a time
        (scheduled; figures to the metrics, a new drift to the admin)."""
        now, owner = time.time(), self.settings.node_name
        with self.db.transaction() as repos:
            held = repos.leases.try_acquire("site-performance", owner, now, _RETENTION_LEASE_S)
        if not held:
            log.info("site performance check skipped: another node is running it")
            return
        try:
            check_drift(self.db, self.settings, now)
        finally:
            with self.db.transaction() as repos:
                repos.leases.release("site-performance", owner)
        self.outbox_wakeup.notify()

    def stop(self) -> None:
        """Close the listeners first, then let running work finish."""
        if self._dicom_server is not None:
            self._dicom_server.shutdown()
        self.store.close()
        if self.hl7 is not None:
            self.hl7.stop()
        self.scheduler.shutdown(wait=True)
        self.runner.stop()
        if self.sr_validator is not None:
            self.sr_validator.close()
        self.outbox_worker.stop()
        # Last, so /healthz says 503 (listener closed) while running work drains.
        if self._http is not None:
            self._http.stop()
        self.audit.close()
        self.db.close()
        if self._receive_tmp_dir is not None and tempfile.tempdir == self._receive_tmp_dir:
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


@contextmanager
def _binding(setting: str, host: str, port: int) -> Iterator[None]:
    """Turn a failed bind into a ``ListenerPortError`` naming the setting (exit 2, no traceback)."""
    try:
        yield
    except ssl.SSLError:
        raise  # a certificate problem, not the address
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = f"; another program holds it (`ss -ltnp 'sport = :{port}'` names it) or another hemex runs"
        elif exc.errno == errno.EACCES and 0 < port < 1024:
            hint = "; ports below 1024 need CAP_NET_BIND_SERVICE (docs/admin.md)"
        raise ListenerPortError(f"cannot listen on {host}:{port} ({setting}): {reason.lower()}{hint}") from exc
