"""What the administrator sees and does from the command line: `hemex status` lists the
studies that were not analysed with their reasons, and `hemex replay STUDY_UID` analyses
a study again (a new report that names the earlier one as its predecessor). The node runs
as a process; storescu is the scanner, Orthanc the PACS; the CTs are synthetic phantoms.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pydicom
import pytest

from tests.support.node_process import (
    NodeConfig,
    NodeDatabase,
    NodeProcess,
    hemex_command,
    write_node_config,
)
from tests.support.peers import Orthanc, wait_until
from tests.support.phantoms import make_head_ct_series

pytestmark = pytest.mark.integration


def _hemex(config: NodeConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hemex_command(), *args, "--config", str(config.path)], capture_output=True,
                          text=True, timeout=120, check=False)


def _srs(orthanc: Orthanc, study_uid: str) -> list[pydicom.Dataset]:
    found = [pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{i}/file"))) for i in orthanc.instances()]
    return sorted((ds for ds in found if ds.Modality == "SR" and ds.StudyInstanceUID == study_uid),
                  key=lambda ds: int(ds.InstanceNumber))


def test_status_names_studies_not_analysed_and_replay_reports_again(tmp_path: Path, orthanc: Orthanc) -> None:
    good = make_head_ct_series(tmp_path / "good", slices=24, rows=64, pixel_mm=230.0 / 64,
                               hematoma_radii_mm=(14.0, 12.0, 12.0))
    short = make_head_ct_series(tmp_path / "short", slices=3, rows=64, pixel_mm=230.0 / 64,
                                patient_id="PHANTOM-0002", accession="ACC-PHANTOM-2")
    config = write_node_config(tmp_path / "node", orthanc.dicom_port, orthanc.ae_title, study_settle_s=1.0)
    node = NodeProcess(config, tmp_path / "node.out")
    node.start()
    db = NodeDatabase(config.data_dir)
    try:
        for series in (good, short):
            sent = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1",
                                   str(config.dicom_port), *map(str, series.paths)],
                                  capture_output=True, text=True, timeout=120, check=False)
            assert sent.returncode == 0, sent.stderr
        wait_until(lambda: len(_srs(orthanc, good.study_uid)) == 1 and len(_srs(orthanc, short.study_uid)) == 1,
                   timeout_s=120, interval_s=0.5)
        status = _hemex(config, "status")
        assert status.returncode == 0, status.stderr
        not_analysed = json.loads(status.stdout)["studies_not_analysed"]
        assert [(s["state"], "3 slices, fewer than 20" in s["reason"]) for s in not_analysed] == [("no_series", True)]
        assert "PHANTOM" not in status.stdout  # handles, not patient IDs

        replay = _hemex(config, "replay", good.study_uid)
        assert replay.returncode == 0, replay.stderr
        wait_until(lambda: len(_srs(orthanc, good.study_uid)) == 2, timeout_s=120, interval_s=0.5)
        first, again = _srs(orthanc, good.study_uid)
        assert again.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
            .ReferencedSOPInstanceUID == first.SOPInstanceUID
        unknown = _hemex(config, "replay", "1.2.3.4.5")
        assert unknown.returncode != 0 and "no study 1.2.3.4.5" in unknown.stderr
    finally:
        assert node.stop() == 0, node.output_tail()
    assert db.count("SELECT COUNT(*) FROM jobs WHERE state = 'failed'") == 0
