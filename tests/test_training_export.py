"""A training set that builds itself: the node pairs baselines with follow-ups, `hemex
export-training-set` writes them in the layout `hemex train` reads, and a tiny model
trains and evaluates on the export, end to end.

Real peers feed the node: dcmtk storescu sends four synthetic patients' baseline and
follow-up phantoms (two expand, two do not), a real MLLP client sends each patient's five
predictor variables. The model is tiny (16^3 input) and not clinical; what is checked is
the layout, the labels, the pseudonyms and that training and evaluation run on it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon.app import Node
from daemon.cli import main as hemex_main
from tests.support.databases import on_postgresql
from tests.support.hl7_peers import MllpClient, msa, obx, oru
from tests.support.node_settings import loopback_node_settings
from tests.support.peers import wait_until
from tests.support.phantoms import make_head_ct_series
from tests.support.postgres import PASSWORD
from tests.test_end_to_end import storescu

T0 = datetime(2026, 10, 5, 9, 0)
ISSUER = "HOSP-A"
# (baseline radii, follow-up radii): the first two grow by far more than 6 mL and 33 %.
PATIENTS = {"EXP-1": ((12.0, 10.0, 10.0), (20.0, 16.0, 14.0)), "EXP-2": ((13.0, 11.0, 10.0), (21.0, 17.0, 15.0)),
            "NOEXP-1": ((16.0, 13.0, 12.0), (16.0, 13.0, 12.5)), "NOEXP-2": ((17.0, 14.0, 12.0), (17.0, 14.0, 12.0))}


def _labs(control_id: str, patient_id: str, ct_at: datetime, anticoagulated: bool) -> str:
    at = (ct_at - timedelta(minutes=40)).strftime("%Y%m%d%H%M%S")
    onset = (ct_at - timedelta(hours=2.5)).strftime("%Y%m%d%H%M%S")
    return oru(control_id, [
        obx(1, "8480-6", "176", "mm[Hg]", at), obx(2, "8462-4", "92", "mm[Hg]", at),
        obx(3, "6301-6", "1.3", "{INR}", at),
        obx(4, "HEMEX-ANTICOAG", "Y^Yes" if anticoagulated else "N^No", "", at, value_type="CWE", system="L"),
        obx(5, "11368-8", onset, "", at, value_type="DTM"),
    ], obr_time=at, patient_id=patient_id, issuer=ISSUER)


def _outcomes(node: Node) -> int:
    with node.db.reading() as repos:
        return len(repos.followups.outcomes())


@dataclass(frozen=True)
class NodeData:
    """A node's data directory and, on the PostgreSQL pass, its database's URL."""

    data_dir: Path
    database_url: str | None

    def use(self, monkeypatch: pytest.MonkeyPatch) -> Path:
        """Point this test's hemex commands at the node's database; returns the data dir."""
        if self.database_url is not None:
            monkeypatch.setenv("HEMEX_DATABASE__URL", self.database_url)
        return self.data_dir


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> NodeData:
    """A node's data directory after four patients' baselines and follow-ups (its own
    PostgreSQL database on that pass: the per-test one does not reach a module fixture)."""
    root = tmp_path_factory.mktemp("export")
    url = request.getfixturevalue("postgres_server").create_database() if on_postgresql() else None
    database = {"database": {"url": url, "password": PASSWORD}} if url else {}
    settings = loopback_node_settings(root / "node", None, report={"validate_with_dicom3tools": False}, **database)
    node = Node(settings)
    node.start()
    try:
        assert node.hl7 is not None
        with MllpClient(node.hl7.port) as client:
            for n, patient in enumerate(PATIENTS):
                ack = client.send(_labs(f"LAB-{n}", patient, T0 + timedelta(days=n), n % 2 == 0))
                assert msa(ack)[1] == "AA"
        files = []
        for n, (patient, (base, follow)) in enumerate(PATIENTS.items()):
            for hours, radii, name in ((0.0, base, "b"), (26.0, follow, "f")):
                files += make_head_ct_series(root / "ct" / f"{patient}-{name}", slices=24, rows=96, pixel_mm=2.4,
                                             slice_mm=5.0, hematoma_radii_mm=radii, patient_id=patient,
                                             accession=f"ACC-{patient}-{name}", seed=n,
                                             acquired_at=T0 + timedelta(days=n, hours=hours)).paths
        storescu(node.dicom_port, files)
        wait_until(lambda: _outcomes(node) == len(PATIENTS), timeout_s=180, interval_s=0.3)
    finally:
        node.stop()
    return NodeData(settings.data_dir, url)


def test_export_writes_the_layout_train_reads_with_pseudonyms(node: NodeData, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    node_data = node.use(monkeypatch)
    out = tmp_path / "set"
    assert hemex_main(["export-training-set", str(out), "--data-dir", str(node_data)]) == 0
    assert "4 case(s) written" in capsys.readouterr().out
    with (out / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["label"] for r in rows) == ["0", "0", "1", "1"]
    for row in rows:
        assert row["case_id"].startswith("case-") and row["patient"].startswith("pt-")
        assert (out / row["ct"]).is_file() and (out / row["mask"]).is_file()
        assert row["systolic_bp_mmhg"] == "176" and row["pt_inr"] == "1.3"
        assert row["anticoagulant_use"] in ("yes", "no") and float(row["hours_onset_to_ct"]) == pytest.approx(2.5)
        assert float(row["hours_to_followup"]) == pytest.approx(26.0)
        provenance = json.loads((out / "cases" / row["case_id"] / "provenance.json").read_text())
        assert provenance["masks"].startswith("automatic, hemex-threshold")
        assert provenance["baseline"]["study"] is None  # pseudonymised: no UID
    exported = (out / "manifest.csv").read_text() + "".join(
        p.read_text() for p in out.rglob("provenance.json"))
    for patient in PATIENTS:
        assert patient not in exported and f"ACC-{patient}" not in exported
    # Stable: a second export gives the same pseudonyms; identifiers only when asked.
    again = tmp_path / "again"
    assert hemex_main(["export-training-set", str(again), "--data-dir", str(node_data)]) == 0
    assert (again / "manifest.csv").read_text() == (out / "manifest.csv").read_text()
    kept = tmp_path / "kept"
    assert hemex_main(["export-training-set", str(kept), "--data-dir", str(node_data), "--keep-identifiers"]) == 0
    assert {r["patient"] for r in csv.DictReader((kept / "manifest.csv").open())} == {
        f"{ISSUER}|{p}" for p in PATIENTS}


def test_a_tiny_model_trains_and_evaluates_on_the_export(node: NodeData, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    node_data = node.use(monkeypatch)
    out = tmp_path / "set"
    assert hemex_main(["export-training-set", str(out), "--data-dir", str(node_data)]) == 0
    model = tmp_path / "model"
    tiny = ["--input-shape", "16,16,16", "--filters", "2,2,2,2", "--kernels", "3x3x3,3x3x3,3x3x3,3x3x3",
            "--padding", "same"]
    assert hemex_main(["train", "--data", str(out / "manifest.csv"), "--out", str(model), "--epochs", "1",
                       "--quiet", *tiny]) == 0
    card = json.loads((model / "best.keras.card.json").read_text())
    assert card["clinically_validated"] is False
    assert card["training_data"].startswith("2 training and 2 validation cases (2 expansions)")
    assert hemex_main(["evaluate", "--weights", str(model / "best.keras"), "--data", str(out / "manifest.csv"),
                       "--out", str(tmp_path / "eval"), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "cases: 4 (2 expansions)" in printed and "masks: all 4 from the manifest" in printed
