"""/metrics and /healthz of a real running node, scraped over HTTP on 127.0.0.1.

The CT is a tiny synthetic phantom (tests/support/phantoms.py) sent with dcmtk's
storescu; the HL7 message is a synthetic ADT over real MLLP; outbox items are queued
through the Outbox API (one dated an hour back with an injected clock) and fail against
a closed port or a missing file, so the node's own delivery passes make the dead letter.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.app import Node
from daemon.config import Settings, load_settings
from daemon.deliver.outbox import Outbox
from daemon.ops.metrics import metrics_blueprint
from daemon.state.database import Database
from daemon.web.app_factory import build_web_app
from daemon.web.server import WebServer
from domain.delivery import Channel, DeliveryRequest
from domain.version import __version__
from tests.support.hl7_peers import MllpClient, adt, msa
from tests.support.peers import wait_until
from tests.support.phantoms import make_head_ct_series

HL7_PATIENT_ID = "P-METRICS-77"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _settings(tmp_path: Path, hl7: bool = True, webhook_port: int = 9, **metrics: object) -> Settings:
    return load_settings(
        None,
        data_dir=tmp_path / "node",
        dicom={"host": "127.0.0.1", "port": 0, "allowed_calling_ae_titles": ["STORESCU"]},
        series={"quiet_period_s": 1.0},
        # Nothing listens on this port: a webhook delivery fails and is retried (pending).
        alerts={"webhooks": [{"name": "oncall", "url": f"http://127.0.0.1:{webhook_port}/hook",
                              "timeout_s": 2.0}]},
        outbox={"poll_interval_s": 0.2, "retry_initial_s": 600.0, "retry_max_s": 600.0},
        hl7={"enabled": hl7, "host": "127.0.0.1", "port": 0},
        metrics={"host": "127.0.0.1", "port": 0, **metrics},
    )


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _scrape(node: Node) -> tuple[str, Samples]:
    assert node.metrics_port is not None
    status, text = _get(node.metrics_port, "/metrics")
    assert status == 200, text
    samples = {(sample.name, frozenset(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    return text, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _total(samples: Samples, name: str) -> float:
    return sum(value for (sample_name, _), value in samples.items() if sample_name == name)


def test_scrape_shows_the_durable_state_without_phi_and_survives_a_restart(tmp_path: Path,
                                                                          refusing_port: int) -> None:
    phantom = make_head_ct_series(tmp_path / "ct", slices=3, rows=64, pixel_mm=4.0,
                                  patient_id="PHANTOM-METRICS-1", accession="ACC-METRICS-1")
    settings = _settings(tmp_path, webhook_port=refusing_port)
    node = Node(settings)
    node.start()
    try:
        result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1",
                                 str(node.dicom_port), *map(str, phantom.paths)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert node.hl7 is not None
        with MllpClient(node.hl7.port) as client:
            assert msa(client.send(adt("METRICS-1", patient_id=HL7_PATIENT_ID)))[1] == "AA"
        # One delivery queued an hour ago to the unreachable webhook, one whose file is gone.
        alert = tmp_path / "alert.json"
        alert.write_text("{}")
        Outbox(node.db, settings.outbox, {}, clock=lambda: time.time() - 3600).enqueue(
            DeliveryRequest(Channel.WEBHOOK, "oncall", "alert-old", alert, phantom.study_uid))
        node.outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "oncall", "alert-gone", tmp_path / "missing.json",
                                            phantom.study_uid))

        def settled() -> bool:
            samples = _scrape(node)[1]
            return (_value(samples, "hemex_dead_letters") == 1
                    and _value(samples, "hemex_hl7_messages_unprocessed") == 0
                    and _value(samples, "hemex_studies", state="no_series") == 1)

        wait_until(settled, timeout_s=30, interval_s=0.2)
        text, samples = _scrape(node)
        assert _value(samples, "hemex_outbox_items", channel="webhook", state="dead") == 1
        assert _value(samples, "hemex_outbox_items", channel="webhook", state="pending") == 1
        assert _value(samples, "hemex_outbox_items", channel="webhook", state="delivered") == 0
        assert 3600 <= _value(samples, "hemex_oldest_pending_delivery_age_seconds") < 3600 + 120
        assert _value(samples, "hemex_instances_stored") == 3
        assert _total(samples, "hemex_studies") == 1 and _total(samples, "hemex_series") == 1
        assert 0 <= _value(samples, "hemex_last_instance_received_age_seconds") < 120
        assert _value(samples, "hemex_hl7_messages_stored") == 1
        assert _value(samples, "hemex_data_dir_free_bytes") == pytest.approx(
            shutil.disk_usage(settings.data_dir).free, rel=0.05)
        assert _value(samples, "hemex_dicom_min_free_disk_bytes") == settings.dicom.min_free_disk_mb * 2**20
        assert _value(samples, "hemex_node_info", version=__version__) == 1
        # Every known state is exported, 0 when empty, so alert rules never meet a gap; the
        # three-slice phantom is too short for the selection rules: the study says so.
        assert _value(samples, "hemex_studies", state="failed") == 0
        assert _value(samples, "hemex_studies", state="no_series") == 1
        assert _value(samples, "hemex_retention_last_run", figure="bytes_freed") == 0
        for phi in (phantom.patient_id, HL7_PATIENT_ID, phantom.accession, phantom.study_uid,
                    phantom.series_uid, "Test^Patient"):
            assert phi not in text
    finally:
        node.stop()

    # The figures are the database's: a new node on the same data dir says the same.
    restarted = Node(settings)
    restarted.start()
    try:
        samples = _scrape(restarted)[1]
        assert _value(samples, "hemex_dead_letters") == 1
        assert _value(samples, "hemex_instances_stored") == 3
        assert _value(samples, "hemex_hl7_messages_stored") == 1
    finally:
        restarted.stop()


def test_healthz_is_200_while_the_listener_runs_and_503_once_it_stops(tmp_path: Path) -> None:
    node = Node(_settings(tmp_path, hl7=False))
    node.start()
    try:
        assert node.metrics_port is not None
        status, body = _get(node.metrics_port, "/healthz")
        assert status == 200, body
        assert json.loads(body) == {"status": "ok", "database": "ok", "dicom_listener": "alive",
                                    "disk": "ok", "version": __version__}
        listener = node._dicom_server  # stop only the DICOM listener, as if it had died
        assert listener is not None
        listener.shutdown()
        try:
            status, body = _get(node.metrics_port, "/healthz")
        finally:
            node._dicom_server = None  # already shut down: node.stop() must not do it twice
        assert status == 503, body
        assert json.loads(body)["dicom_listener"] == "stopped"
        assert _get(node.metrics_port, "/nothing-here")[0] == 404
    finally:
        node.stop()


@pytest.mark.sqlite_only
def test_healthz_is_503_while_free_disk_is_below_the_floor(tmp_path: Path) -> None:
    """The probes saw /healthz say ok while the disk was full and every image got A700."""
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    db = Database(tmp_path / "hemex.sqlite3")
    floor = (free_mb + 1024) * 1024 * 1024
    server = WebServer("127.0.0.1", 0, build_web_app([metrics_blueprint(db, tmp_path, floor, lambda: True)],
                                                     b"k" * 32))
    server.start()
    try:
        status, body = _get(server.port, "/healthz")
        assert status == 503, body
        assert json.loads(body)["disk"].startswith("below dicom.min_free_disk_mb")
    finally:
        server.stop()
        db.close()


@pytest.mark.sqlite_only
def test_an_unreadable_database_is_503_on_both_paths(tmp_path: Path) -> None:
    db_path = tmp_path / "hemex.sqlite3"
    db = Database(db_path)
    db.close()  # the last connection checkpoints the WAL and removes it
    db_path.write_bytes(b"not a database " * 100)
    app = build_web_app([metrics_blueprint(db, tmp_path, 0, listener_alive=lambda: True)], b"k" * 32)
    server = WebServer("127.0.0.1", 0, app)
    server.start()
    try:
        status, body = _get(server.port, "/healthz")
        assert status == 503 and json.loads(body)["database"] == "error: DatabaseError"
        assert _get(server.port, "/metrics")[0] == 503
    finally:
        server.stop()


def test_a_taken_metrics_port_does_not_stop_the_node(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        node = Node(_settings(tmp_path, hl7=False, port=squatter.getsockname()[1]))
        node.start()
        try:
            assert node.metrics_port is None
            assert node.dicom_listener_alive()  # CT is still received
        finally:
            node.stop()


def test_metrics_disabled_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEMEX_METRICS__PORT", raising=False)  # conftest's test-wide override
    defaults = load_settings(None).metrics
    assert (defaults.enabled, defaults.host, defaults.port) == (True, "127.0.0.1", 9464)
    # Metrics off: the HTTP server still serves the console, but not /metrics or /healthz.
    node = Node(_settings(tmp_path, hl7=False, enabled=False))
    node.start()
    try:
        assert node.metrics_port is not None
        assert _get(node.metrics_port, "/metrics")[0] == 404
        assert _get(node.metrics_port, "/healthz")[0] == 404
    finally:
        node.stop()
    # Console off too: no HTTP server at all.
    node = Node(load_settings(None, **{**_settings(tmp_path, hl7=False, enabled=False).model_dump(),
                                       "console": {"enabled": False}}))
    node.start()
    try:
        assert node.metrics_port is None
    finally:
        node.stop()
