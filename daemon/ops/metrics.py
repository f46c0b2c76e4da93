"""Node state as Prometheus metrics, and a health check, on the node's HTTP server.

``GET /metrics`` serves the Prometheus text format (OpenMetrics when asked), which
Prometheus, Zabbix, Grafana Agent and Nagios plugins all scrape. Every figure is read
from the node database at scrape time, so it is the durable truth: it survives restarts
and cannot drift from what ``hemex status`` says. ``GET /healthz`` answers 200 while the
database answers, the DICOM listener runs and free disk space is above the DICOM
listener's floor, 503 otherwise.

No label carries PHI: labels are states, job kinds, channel names and the version; never
a patient id, accession or UID.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers.response import Response as BaseResponse

from daemon.ops.loop_metrics import ClosedLoopCollector
from daemon.retention.purge import RETENTION_TASK
from daemon.state.database import Database
from daemon.state.monitoring_repository import NodeFigures
from domain.study import StudyState
from domain.version import __version__

log = logging.getLogger(__name__)

# States written by the stages (see the schema in daemon/state/database.py). They are
# always exported, 0 when empty, so a graph or an alert rule never meets a missing series;
# a state a later version adds is exported too, as soon as a row has it.
STUDY_STATES: tuple[str, ...] = tuple(state.value for state in StudyState)
SERIES_STATES: tuple[str, ...] = ("receiving", "complete")
JOB_STATES: tuple[str, ...] = ("pending", "running", "done", "failed")
OUTBOX_STATES: tuple[str, ...] = ("pending", "delivered", "dead")


class NodeStateCollector(Collector):
    """Reads the node's database at each scrape and yields gauges.

    Parameters
    ----------
    db
        The node database (each scrape reads one snapshot).
    data_dir
        The data directory, whose file system's free space is exported.
    min_free_disk_bytes
        The free space below which the DICOM listener refuses images (A700).
    clock
        Seconds since the epoch; injected by tests.
    """

    def __init__(self, db: Database, data_dir: Path, min_free_disk_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._data_dir = Path(data_dir)
        self._min_free_disk_bytes = min_free_disk_bytes
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples (lets the registry filter by name)."""
        return self._families().values()

    def collect(self) -> Iterable[Metric]:
        """One consistent read of the database, as metric families.

        Raises
        ------
        SQLAlchemyError
            When the database cannot be read (the server answers 503).
        """
        families = self._families()
        with self._db.reading() as repos:
            figures = repos.monitoring.figures()
            runs = repos.maintenance.last_runs()
        self._add_state_counts(figures, families)
        self._add_totals(figures, families)
        if RETENTION_TASK in runs:
            ran_at, numbers = runs[RETENTION_TASK]
            families["hemex_retention_last_run_timestamp_seconds"].add_metric([], ran_at)
            for name, value in numbers.items():
                families["hemex_retention_last_run"].add_metric([name], value)
        families["hemex_data_dir_free_bytes"].add_metric([], shutil.disk_usage(self._data_dir).free)
        families["hemex_dicom_min_free_disk_bytes"].add_metric([], self._min_free_disk_bytes)
        families["hemex_node"].add_metric([], {"version": __version__})
        timing = self._db.statement_time
        families["hemex_database_statements"].add_metric([], timing.statements)
        families["hemex_database_statement_seconds"].add_metric([], timing.seconds)
        return families.values()

    @staticmethod
    def _families() -> dict[str, Any]:
        gauges = {
            "hemex_studies": ("Studies by state.", ["state"]),
            "hemex_series": ("Series by state.", ["state"]),
            "hemex_jobs": ("Analysis jobs by kind and state.", ["kind", "state"]),
            "hemex_outbox_items": ("Outbound deliveries by channel and state (dead = dead letter).",
                                   ["channel", "state"]),
            "hemex_dead_letters": ("Deliveries that permanently failed (hemex dead-letters).", []),
            "hemex_oldest_pending_delivery_age_seconds": (
                "Age of the oldest delivery not yet delivered nor dead; 0 when none.", []),
            "hemex_instances_stored": ("DICOM instances received and recorded.", []),
            "hemex_last_instance_received_age_seconds": (
                "Seconds since the last DICOM instance arrived; absent before the first.", []),
            "hemex_hl7_messages_stored": ("HL7 messages accepted and recorded.", []),
            "hemex_hl7_messages_unprocessed": ("HL7 messages not yet applied to the clinical data.", []),
            "hemex_data_dir_free_bytes": ("Free bytes on the file system of the data directory.", []),
            "hemex_dicom_min_free_disk_bytes": (
                "Below this much free space the DICOM listener refuses images (A700).", []),
            "hemex_retention_last_run_timestamp_seconds": (
                "When the retention purge last ran (epoch seconds); absent before its first run.", []),
            "hemex_retention_last_run": (
                ("Figures of the last retention purge: studies and folders purged, bytes freed,"
                " studies kept because a delivery is unfinished."), ["figure"]),
        }
        families: dict[str, Any] = {name: GaugeMetricFamily(name, doc, labels=labels)
                                    for name, (doc, labels) in gauges.items()}
        families["hemex_node"] = InfoMetricFamily("hemex_node", "The running hemex version.")
        families["hemex_database_statements"] = CounterMetricFamily(
            "hemex_database_statements", "SQL statements this node ran since it started.")
        families["hemex_database_statement_seconds"] = CounterMetricFamily(
            "hemex_database_statement_seconds", "Seconds this node spent in SQL statements since it started.")
        return families

    @staticmethod
    def _add_state_counts(figures: NodeFigures, families: dict[str, Any]) -> None:
        for name, counts, known in (("hemex_studies", figures.studies, STUDY_STATES),
                                    ("hemex_series", figures.series, SERIES_STATES)):
            for state, count in {**dict.fromkeys(known, 0), **counts}.items():
                families[name].add_metric([state], count)
        for name, grouped, known in (("hemex_jobs", figures.jobs, JOB_STATES),
                                     ("hemex_outbox_items", figures.outbox, OUTBOX_STATES)):
            full = {(group, state): 0 for group, _ in grouped for state in known}
            full.update(grouped)
            for labels, count in sorted(full.items()):
                families[name].add_metric(list(labels), count)

    def _add_totals(self, figures: NodeFigures, families: dict[str, Any]) -> None:
        now = self._clock()
        families["hemex_dead_letters"].add_metric([], figures.dead_letters)
        oldest = figures.oldest_pending_delivery_at
        families["hemex_oldest_pending_delivery_age_seconds"].add_metric(
            [], 0.0 if oldest is None else max(0.0, now - oldest))
        families["hemex_instances_stored"].add_metric([], figures.instances)
        if figures.last_instance_at is not None:
            families["hemex_last_instance_received_age_seconds"].add_metric(
                [], max(0.0, now - figures.last_instance_at))
        families["hemex_hl7_messages_stored"].add_metric([], figures.hl7_messages)
        families["hemex_hl7_messages_unprocessed"].add_metric([], figures.hl7_unprocessed)


def health(db: Database, listener_alive: Callable[[], bool], data_dir: Path,
           min_free_disk_bytes: int) -> tuple[bool, dict[str, str]]:
    """Whether the node can take work: the database answers, the DICOM listener runs and
    the data directory has more free space than ``dicom.min_free_disk_mb`` (below it
    every image gets A700, so the node is not taking work).

    Returns
    -------
    (healthy, details)
        ``details`` names each check's outcome (no PHI), for the JSON body.
    """
    details = {"version": __version__}
    try:
        with db.reading() as repos:
            repos.monitoring.answers()
        details["database"] = "ok"
    except SQLAlchemyError as exc:
        details["database"] = f"error: {type(exc).__name__}"
    details["dicom_listener"] = "alive" if listener_alive() else "stopped"
    try:
        free = shutil.disk_usage(data_dir).free
        details["disk"] = "ok" if free >= min_free_disk_bytes else (
            f"below dicom.min_free_disk_mb: {free // (1024 * 1024)} MB free")
    except OSError as exc:
        details["disk"] = f"error: {type(exc).__name__}"
    healthy = details["database"] == "ok" and details["dicom_listener"] == "alive" and details["disk"] == "ok"
    details["status"] = "ok" if healthy else "unavailable"
    return healthy, details


def metrics_blueprint(db: Database, data_dir: Path, min_free_disk_bytes: int,
                      listener_alive: Callable[[], bool]) -> Blueprint:
    """``/metrics`` and ``/healthz`` as routes of the node's HTTP server (no login: a
    scraper and a health check must reach them; they carry no PHI).

    Parameters
    ----------
    db
        The node database.
    data_dir
        The node's data directory (its free space is exported).
    min_free_disk_bytes
        The DICOM listener's free-space floor, exported beside the free space.
    listener_alive
        True while the DICOM listener accepts associations.
    """
    # A registry of our own, not the global one: several nodes in one process (tests)
    # each export their own state.
    registry = CollectorRegistry()
    registry.register(NodeStateCollector(db, data_dir, min_free_disk_bytes))
    registry.register(ClosedLoopCollector(db))  # alerts, follow-ups, site performance
    ProcessCollector(registry=registry)  # memory, CPU, open files of the node
    # prometheus_client's own WSGI app: content negotiation (OpenMetrics), gzip, name[] filters.
    exporter = make_wsgi_app(registry)
    blueprint = Blueprint("metrics", __name__)

    @blueprint.get("/healthz")
    def healthz() -> Response:
        healthy, details = health(db, listener_alive, data_dir, min_free_disk_bytes)
        return Response(json.dumps(details), status=200 if healthy else 503, mimetype="application/json")

    @blueprint.get("/metrics")
    def metrics() -> BaseResponse:
        try:
            return Response.from_app(exporter, request.environ, buffered=True)
        except SQLAlchemyError as exc:
            log.error("metrics scrape failed reason=%s", type(exc).__name__)
            return Response("node database unreadable\n", status=503, mimetype="text/plain")

    return blueprint
