"""The running node wires the expansion predictor, and says its weights are not validated.

Real peers only: dcmtk storescu is the scanner, Orthanc the PACS, a real MLLP client the
lab feed (so all five variables of Multimodal CNN Model 2 are known and that model
runs), an HTTP server the paging webhook. The CT is a synthetic phantom
(tests/support/phantoms.py, 64 x 64 pixels of 3.6 mm); the weights are a tiny random
model (tests/support/tiny_expansion_model.py) whose card says clinically_validated =
false. The risk threshold is 0, so validated weights would make every study 'high
risk': only the card keeps the alert from being raised.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from daemon.app import Node
from daemon.report.sr_evaluations import NOT_VALIDATED_STATEMENT
from tests.support.alert_peers import HttpReceiver
from tests.support.hl7_peers import MllpClient, adt, msa, obx, oru
from tests.support.node_settings import loopback_node_settings
from tests.support.peers import Orthanc, wait_until
from tests.support.phantoms import make_head_ct_series
from tests.support.sr_reading import walk_content
from tests.support.tiny_expansion_model import save_tiny

ISSUER = "HOSP-A"  # the phantom's Issuer of Patient ID
PATIENT = "NODE-PRED-1"
PROBABILITY = "Predicted probability of hematoma expansion"


def labs(control_id: str) -> str:
    """All five predictor variables, measured before the phantom's CT (10:16:10)."""
    return oru(control_id, [
        obx(1, "8480-6", "182", "mm[Hg]", "20261122094500"),
        obx(2, "8462-4", "95", "mm[Hg]", "20261122094500"),
        obx(3, "6301-6", "1.4", "{INR}", "20261122100000"),
        obx(4, "HEMEX-ANTICOAG", "Y^Yes", "", "20261122094500", value_type="CWE", system="L"),
        obx(5, "11368-8", "20261122081610", "", "20261122094500", value_type="DTM"),
    ], obr_time="20261122100000", patient_id=PATIENT, issuer=ISSUER)


def the_sr(orthanc: Orthanc) -> Dataset:
    for orthanc_id in orthanc.instances():
        ds = pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{orthanc_id}/file")))
        if ds.Modality == "SR":
            return ds
    raise AssertionError("no SR in the PACS")


def items(sr: Dataset, value_type: str) -> dict[str, list[Dataset]]:
    found: dict[str, list[Dataset]] = {}
    for item in walk_content(sr):
        if item.ValueType == value_type:
            found.setdefault(str(item.ConceptNameCodeSequence[0].CodeMeaning), []).append(item)
    return found


@pytest.mark.database_neutral
def test_node_reports_the_tiny_unvalidated_model_and_raises_no_risk_alert(
        tmp_path: Path, orthanc: Orthanc, webhook: HttpReceiver) -> None:
    weights = tmp_path / "weights" / "tiny-multimodal.keras"
    save_tiny(weights, validated=False)
    ct = make_head_ct_series(tmp_path / "ct", slices=24, rows=64, pixel_mm=3.6, slice_mm=5.0,
                             hematoma_radii_mm=(20.0, 16.0, 14.0), patient_id=PATIENT)
    settings = loopback_node_settings(
        tmp_path / "node", orthanc,
        report={"validate_with_dicom3tools": False},  # test_report_builders validates
        prediction={"weights_path": str(weights), "device": "cpu", "risk_threshold": 0.0},
        alerts={"min_volume_ml": 100000.0, "on_high_expansion_risk": True,
                "webhooks": [{"name": "oncall", "url": webhook.url}]},
    )
    node = Node(settings)
    node.start()
    try:
        assert node.hl7 is not None
        with MllpClient(node.hl7.port) as client:
            acks = [client.send(adt("NP-ADT", "A01", patient_id=PATIENT, issuer=ISSUER)),
                    client.send(labs("NP-LAB"))]
        assert [msa(a)[1] for a in acks] == ["AA", "AA"]
        result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1",
                                 str(node.dicom_port), *map(str, ct.paths)],
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        # SEG, KO, the key-image capture, then the SR (sent last: what it references goes first).
        wait_until(lambda: len(orthanc.instances()) >= 4, timeout_s=120, interval_s=0.5)
        sr = the_sr(orthanc)

        # The probability, with the model's name and version as its algorithm.
        (probability,) = items(sr, "NUM")[PROBABILITY]
        assert 0.0 < float(probability.MeasuredValueSequence[0].NumericValue) < 100.0
        algorithm = {str(i.ConceptNameCodeSequence[0].CodeMeaning): str(i.TextValue)
                     for i in probability.ContentSequence if i.ValueType == "TEXT"}
        assert algorithm["Algorithm Name"] == "tiny test model"
        assert algorithm["Algorithm Version"] == "0"
        # The multimodal model ran on all five variables, not the image-only fallback.
        texts = {str(i.TextValue) for i in walk_content(sr) if i.ValueType == "TEXT"}
        assert "variables missing: " not in " ".join(texts)
        assert not any("image-only fallback" in t for t in texts)
        # Where the weights came from, and that they are NOT clinically validated.
        origin = items(sr, "TEXT")["Expansion model weights origin"]
        assert [str(i.TextValue) for i in origin] == ["random initialisation in a test"]
        assert NOT_VALIDATED_STATEMENT in texts
        assert "model card: clinically validated: no" in texts
        assert "model card: intended use: tests only" in texts
        (category,) = items(sr, "CODE")["Hematoma expansion risk category"]
        assert str(category.ConceptCodeSequence[0].CodeMeaning) == "Not clinically validated"

        # No risk alert from unvalidated weights, though the threshold is 0: the alert
        # decision is committed with the SR, so nothing can still be on its way.
        study_uid = str(sr.StudyInstanceUID)
        with node.db.reading() as repos:
            assert [r.risk_category for r in repos.results.of_study(study_uid)] == ["not_validated"]
            assert repos.alerts.keys_of(study_uid) == []
            assert [i for i in repos.outbox.items() if i.channel == "webhook"] == []
        assert webhook.requests == []
    finally:
        node.stop()
