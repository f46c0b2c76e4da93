"""A gantry-tilted head CT through the whole node: dcmtk storescu as the scanner (no
Images in Acquisition, so the sheared slice stack itself completes the series), `hemex
serve` as a process, Orthanc as the PACS. The phantom (tests/support/phantoms.py) is
tilted 25 degrees: positions sheared along the column direction, Gantry/Detector Tilt
set, orientation unchanged, as scanners write it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from tests.support.dicom_listener import storescu
from tests.support.node_process import NodeProcess, write_node_config
from tests.support.peers import Orthanc, wait_until
from tests.support.phantoms import make_head_ct_series
from tests.support.sr_reading import sr_numeric_values

pytestmark = [pytest.mark.integration, pytest.mark.database_neutral]


def test_a_25_degree_tilted_series_is_reported_with_its_true_volume(tmp_path: Path, orthanc: Orthanc) -> None:
    phantom = make_head_ct_series(tmp_path / "ct", slices=40, rows=128, pixel_mm=1.8, slice_mm=2.5,
                                  gantry_tilt_deg=25.0, hematoma_radii_mm=(16.0, 14.0, 12.0))
    for path in phantom.paths:
        ds = pydicom.dcmread(path)
        del ds.ImagesInAcquisition
        ds.save_as(path, enforce_file_format=True)
    config = write_node_config(tmp_path / "node", orthanc.dicom_port, orthanc.ae_title, quiet_period_s=600.0)
    node = NodeProcess(config, tmp_path / "node.out")
    node.start()
    try:
        result = storescu(config.dicom_port, phantom.paths, timeout_s=120)
        assert result.returncode == 0, result.stderr

        def sr() -> pydicom.Dataset | None:
            for orthanc_id in orthanc.instances():
                ds = pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{orthanc_id}/file")))
                if ds.Modality == "SR":
                    return ds
            return None

        # Long before the 600 s quiet period: the sheared stack is recognised as whole.
        wait_until(lambda: sr() is not None, timeout_s=120, interval_s=0.5)
    finally:
        assert node.stop() == 0, node.output_tail()
    report = sr()
    assert report is not None
    assert sr_numeric_values(report)["Volume"] == pytest.approx(phantom.hematoma_volume_ml, rel=0.10)
    log = (config.data_dir / "logs" / "hemex.log").read_text(encoding="utf-8")
    assert "whole stack of 40 slices" in log
