"""blast-ct as the node's masking method, through the whole node: dcmtk storescu as the
scanner, `hemex serve` as a process, Orthanc as the PACS.

The phantom (tests/support/phantoms.py, synthetic) carries an intraparenchymal hematoma
beside intraventricular blood. One ensemble member runs, on the CPU, to keep the test
short; what is checked is the wiring, not the network's accuracy (docs/masking.md gives
that): the SEG at the PACS has a segment per class blast-ct labels, named by the method
and its members, and the SR gives a volume per class and says what the model is and that
it is not clinically validated; the console's study page shows each class and the
model's statements.
"""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest

from domain.handles import study_handle
from tests.support.dicom_listener import storescu
from tests.support.node_process import NodeProcess, write_node_config
from tests.support.peers import Orthanc, wait_until
from tests.support.phantoms import make_head_ct_series
from tests.support.sr_reading import walk_content

pytestmark = [pytest.mark.integration, pytest.mark.database_neutral]


def _by_modality(orthanc: Orthanc) -> dict[str, pydicom.Dataset]:
    found = {}
    for orthanc_id in orthanc.instances():
        ds = pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{orthanc_id}/file")))
        found[str(ds.Modality)] = ds
    return found


def test_blast_ct_reports_each_kind_of_blood_with_its_model_statements(tmp_path: Path, orthanc: Orthanc,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    slices, rows, pixel_mm, slice_mm = 24, 128, 1.8, 2.5
    labels = np.zeros((slices, rows, rows), np.uint8)
    z, y, x = np.meshgrid(*(np.arange(n) for n in labels.shape), indexing="ij")
    labels[((z - 12) / 5) ** 2 + ((y - 64) / 9) ** 2 + ((x - 80) / 9) ** 2 <= 1] = 1  # IPH
    labels[((z - 12) / 3) ** 2 + ((y - 60) / 3) ** 2 + ((x - 59) / 3) ** 2 <= 1] = 4  # IVH
    phantom = make_head_ct_series(tmp_path / "ct", slices=slices, rows=rows, pixel_mm=pixel_mm,
                                  slice_mm=slice_mm, hematoma_radii_mm=None, lesion_labels=labels)
    config = write_node_config(tmp_path / "node", orthanc.dicom_port, orthanc.ae_title, quiet_period_s=600.0)
    with open(config.path, "a", encoding="utf-8") as toml:
        toml.write('\n[masking]\nmethod = "blast-ct"\n\n[masking.blast_ct]\nensemble = [8]\ndevice = "cpu"\n')
    monkeypatch.setenv("HEMEX_METRICS__PORT", str(config.metrics_port))  # the console, on a known port
    node = NodeProcess(config, tmp_path / "node.out")
    node.start()
    try:
        result = storescu(config.dicom_port, phantom.paths, timeout_s=120)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: {"SR", "SEG"} <= set(_by_modality(orthanc)), timeout_s=300, interval_s=1.0)
        # The console's study page (loopback, no login by default) shows each class.
        page_url = f"http://127.0.0.1:{config.metrics_port}/studies/{study_handle(phantom.study_uid)}"
        with urllib.request.urlopen(page_url, timeout=30) as response:
            page = response.read().decode("utf-8")
    finally:
        assert node.stop() == 0, node.output_tail()
    objects = _by_modality(orthanc)
    seg = objects["SEG"]
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == [
        "Intraparenchymal hemorrhage", "Intraventricular hemorrhage", "Extra-axial hemorrhage", "Perilesional oedema"]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert str(algorithm.AlgorithmName) == "blast-ct"
    assert str(algorithm.AlgorithmVersion).endswith("models 8")
    items = list(walk_content(objects["SR"]))
    tracked = {str(i.TextValue) for i in items if i.ValueType == "TEXT"
               and i.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"}
    assert {"Intraparenchymal hematoma", "Intraventricular hemorrhage", "Extra-axial hemorrhage",
            "Perilesional oedema"} <= tracked
    statements = [str(i.TextValue) for i in items if i.ValueType == "TEXT"
                  and i.ConceptNameCodeSequence[0].CodeMeaning == "Model statement"]
    assert "hematoma masking: clinically validated: no" in statements
    assert any(s.startswith("hematoma masking: training data:") for s in statements)
    for shown in ("Extra-axial blood", "Perilesional oedema", "Masking model", "clinically validated: no"):
        assert shown in page, shown
