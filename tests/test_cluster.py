"""Several `hemex serve` nodes on one real PostgreSQL database and one data directory.

Real processes and peers on 127.0.0.1: dcmtk storescu is the scanner (sending half of a
series to each receiver, as a TCP load balancer in front of two nodes would), a counting
C-STORE SCP is the PACS (it keeps every reception, so a second SR would show), and nodes
are killed with kill -9. The CT series are synthetic phantoms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.support.counting_pacs import CountingPacs
from tests.support.node_process import (
    NodeConfig,
    NodeDatabase,
    NodeProcess,
    Scanner,
    write_node_config,
)
from tests.support.peers import wait_until
from tests.support.phantoms import PhantomSeries, make_head_ct_series
from tests.support.postgres import PASSWORD, PostgresServer

LEASE_S = 5.0  # the shortest allowed: a dead node's work is taken over within seconds


@pytest.fixture
def cluster_database(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A PostgreSQL database of this test's own, whatever pass the suite is on; the nodes
    (child processes) read it from the environment."""
    url = postgres_server.create_database()
    monkeypatch.setenv("HEMEX_DATABASE__URL", url)
    monkeypatch.setenv("HEMEX_DATABASE__PASSWORD", PASSWORD)
    return url


@pytest.fixture
def pacs() -> Iterator[CountingPacs]:
    server = CountingPacs().start()
    yield server
    server.stop()


def _node(tmp_path: Path, name: str, pacs: CountingPacs, roles: tuple[str, ...],
          validate: bool = False) -> tuple[NodeConfig, NodeProcess]:
    config = write_node_config(tmp_path / name, pacs.port, pacs.ae_title, quiet_period_s=2.0, validate_reports=validate,
                               data_dir=tmp_path / "shared-data", node_name=name, roles=roles, lease_s=LEASE_S)
    return config, NodeProcess(config, tmp_path / f"{name}.out")


def _phantom(folder: Path, patient: str) -> PhantomSeries:
    return make_head_ct_series(folder, slices=24, rows=64, pixel_mm=230.0 / 64, patient_id=patient,
                               accession=f"A-{patient}"[:16], hematoma_radii_mm=(12.0, 10.0, 10.0))


def _srs_per_study(pacs: CountingPacs) -> Counter[str]:
    return Counter(r.study_uid for r in {r.sop_instance_uid: r for r in pacs.receptions()}.values()
                   if r.modality == "SR")


def _send(port: int, files: list[Path]) -> set[Path]:
    scanner = Scanner(port)
    scanner.send_in_background(files)
    scanner.wait()
    return scanner.acknowledged


def test_a_series_split_across_two_receivers_is_reported_once(tmp_path: Path, cluster_database: str,
                                                              pacs: CountingPacs) -> None:
    phantom = _phantom(tmp_path / "ct", "CL-SPLIT")
    first, node_a = _node(tmp_path, "node-a", pacs, ("all",))
    second, node_b = _node(tmp_path, "node-b", pacs, ("all",))
    node_a.start()
    node_b.start()
    try:
        half = len(phantom.paths) // 2
        acknowledged = _send(first.dicom_port, phantom.paths[:half]) | _send(second.dicom_port, phantom.paths[half:])
        assert acknowledged == set(phantom.paths)
        wait_until(lambda: _srs_per_study(pacs)[phantom.study_uid] >= 1, timeout_s=90, interval_s=0.5)
        db = NodeDatabase(first.data_dir)
        wait_until(lambda: db.count("SELECT COUNT(*) FROM outbox WHERE state != 'delivered'") == 0, timeout_s=30)
    finally:
        assert node_a.stop() == 0 and node_b.stop() == 0
    assert _srs_per_study(pacs) == {phantom.study_uid: 1}
    assert db.count("SELECT COUNT(*) FROM instances") == len(phantom.paths)
    assert db.count("SELECT COUNT(*) FROM series WHERE state = 'complete'") == 1
    assert db.count("SELECT COUNT(*) FROM results") == 1
    uids = {str(r.sop_instance_uid) for r in pacs.receptions()}
    assert len(uids) == len(pacs.receptions())  # nothing was sent twice


def test_the_survivor_finishes_the_work_of_a_node_killed_mid_analysis(tmp_path: Path, cluster_database: str,
                                                                      pacs: CountingPacs) -> None:
    studies = [_phantom(tmp_path / f"ct{i}", f"CL-KILL-{i}") for i in range(2)]
    # node-a validates its reports (dciodvfy and a JVM: seconds), so the kill lands while
    # it holds a running job.
    doomed_config, doomed = _node(tmp_path, "node-a", pacs, ("receive", "analyse"), validate=True)
    survivor_config, survivor = _node(tmp_path, "node-b", pacs, ("receive", "analyse", "deliver"))
    db = NodeDatabase(doomed_config.data_dir)
    doomed.start()
    acknowledged = _send(doomed_config.dicom_port, studies[0].paths)
    # node-a claims the analysis as soon as the series is complete, then its report; kill
    # it while the report runs (validated: about a second, where the analysis of this
    # phantom takes 0.3 s and could end between the poll and the kill).
    wait_until(lambda: db.count("SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_owner = 'node-a'"
                                " AND kind = 'report_study'") > 0, timeout_s=60, interval_s=0.02)
    doomed.kill()
    assert db.count("SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_owner = 'node-a'") == 1
    survivor.start()
    try:
        acknowledged |= _send(survivor_config.dicom_port, studies[1].paths)
        wait_until(lambda: set(_srs_per_study(pacs)) == {s.study_uid for s in studies}, timeout_s=120,
                   interval_s=0.5)
        wait_until(lambda: db.count("SELECT COUNT(*) FROM outbox WHERE state != 'delivered'") == 0, timeout_s=30)
    finally:
        assert survivor.stop() == 0, survivor.output_tail()
    assert _srs_per_study(pacs) == {s.study_uid: 1 for s in studies}
    stored = dict(db.rows("SELECT sop_instance_uid, path FROM instances"))
    for path in acknowledged:  # every acknowledged instance is kept and decodes
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert pydicom.dcmread(stored[uid]).pixel_array.size > 0
    assert db.count("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running', 'failed')") == 0
    assert db.count("SELECT COUNT(*) FROM results") == 2
    # The first study's job that node-a held when it died was run again, by node-b.
    assert db.count(f"SELECT MAX(attempts) FROM jobs WHERE key = '{studies[0].study_uid}'") == 2
