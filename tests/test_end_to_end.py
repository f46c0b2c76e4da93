"""The whole node with real peers: dcmtk storescu as the scanner, Orthanc as the PACS,
aiosmtpd as the mail server and an HTTP server as the paging webhook. The report reaching
Orthanc is the SR, the SEG, the key-image KOS and the key-image Secondary Capture.

The CT is a synthetic phantom (tests/support/phantoms.py) with a hematoma of known
volume; the measured volume in the SR that Orthanc holds must match it.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from daemon.app import Node
from daemon.config import Settings
from domain.jobs import JobKind, JobState
from domain.study import StudyState
from tests.support.alert_peers import HttpReceiver, SmtpReceiver
from tests.support.node_settings import loopback_node_settings
from tests.support.peers import Orthanc, free_port, wait_until
from tests.support.phantoms import make_head_ct_series
from tests.support.sr_reading import sr_numeric_values

VOLUME_TOLERANCE = 0.10  # measured planimetry volume within 10 % of the phantom's voxelised truth


def _node_settings(tmp_path: Path, orthanc: Orthanc, smtp: SmtpReceiver, webhook: HttpReceiver) -> Settings:
    return loopback_node_settings(
        tmp_path / "node", orthanc,
        alerts={
            "min_volume_ml": 10.0,
            "include_identifiers": "all",  # the alert content is checked below
            "webhooks": [{"name": "oncall", "url": webhook.url, "token": "s3cret-token"}],
            "email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
                      "sender": "hemex@test.invalid", "recipients": ["oncall@test.invalid"]},
        },
    )


def storescu(port: int, files: list[Path]) -> None:
    result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def _orthanc_objects(orthanc: Orthanc) -> dict[str, pydicom.Dataset]:
    objects = {}
    for orthanc_id in orthanc.instances():
        ds = pydicom.dcmread(__import__("io").BytesIO(orthanc.get_bytes(f"/instances/{orthanc_id}/file")))
        objects[str(ds.Modality)] = ds
    return objects


def test_ct_in_sr_and_seg_out_alert_sent(tmp_path: Path, orthanc: Orthanc, smtp: SmtpReceiver,
                                         webhook: HttpReceiver) -> None:
    phantom = make_head_ct_series(tmp_path / "ct", slices=40, hematoma_radii_mm=(22.0, 18.0, 16.0))
    settings = _node_settings(tmp_path, orthanc, smtp, webhook)
    node = Node(settings)
    node.start()
    try:
        storescu(node.dicom_port, phantom.paths)
        wait_until(lambda: len(orthanc.instances()) >= 4, timeout_s=180, interval_s=0.5)
        objects = _orthanc_objects(orthanc)
        assert set(objects) == {"SR", "SEG", "KO", "OT"}
        # The key image is the slice where the hematoma is largest (two tie at the centre).
        areas = phantom.hematoma.sum(axis=(1, 2))
        largest = {pydicom.dcmread(phantom.paths[i], stop_before_pixels=True).SOPInstanceUID
                   for i in np.flatnonzero(areas >= 0.97 * areas.max())}
        key_image = objects["KO"].CurrentRequestedProcedureEvidenceSequence[0] \
            .ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        assert key_image in largest
        # The key image every viewer shows: a Secondary Capture of that slice, in the study,
        # figures burned in (and said so), made from the slice the KOS flags.
        capture = objects["OT"]
        assert capture.StudyInstanceUID == phantom.study_uid and capture.BurnedInAnnotation == "YES"
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == key_image
        assert capture.PhotometricInterpretation == "RGB" and "NOT FOR DIAGNOSIS" in capture.SeriesDescription
        sr, seg = objects["SR"], objects["SEG"]
        assert sr.StudyInstanceUID == seg.StudyInstanceUID == phantom.study_uid
        assert sr.CompletionFlag == "COMPLETE"
        volume_ml = sr_numeric_values(sr)["Volume"]
        assert volume_ml == pytest.approx(phantom.hematoma_volume_ml, rel=VOLUME_TOLERANCE)
        text = json.dumps(sr.to_json_dict())
        assert "hemex-threshold" in text  # the algorithm is named
        # Alerts: one webhook call with the bearer token, one e-mail, both with the volume.
        wait_until(lambda: webhook.requests and smtp.messages, timeout_s=60)
        request = webhook.requests[0]
        assert request.headers["Authorization"] == "Bearer s3cret-token"
        body = json.loads(request.body)
        assert body["study"]["accession_number"] == phantom.accession
        assert body["hematoma"]["volume_ml"] == pytest.approx(volume_ml, rel=1e-3)
        assert phantom.patient_id in str(smtp.messages[0])
        # The same picture as PNG with both alerts: base64 in the webhook JSON, attached to the mail.
        png = base64.b64decode(body["key_image"]["base64"])
        assert png.startswith(b"\x89PNG") and body["key_image"]["media_type"] == "image/png"
        attached = [part for part in smtp.messages[0].walk() if part.get_content_type() == "image/png"]
        assert len(attached) == 1 and attached[0].get_payload(decode=True) == png
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), capture.pixel_array)
        # Sent once per study: a second pass of everything sends nothing new.
        node.outbox.deliver_due()
        assert len(webhook.requests) == 1 and len(smtp.messages) == 1
        assert len(orthanc.instances()) == 4
        # A crash after the analysis was handed on but before its job was marked done
        # runs the job again: it finds its analysis and makes no second SR.
        with node.db.reading() as repos:
            outbox_rows = len(repos.outbox.items())
            assert repos.studies.status(phantom.study_uid).state is StudyState.FINAL
        with node.db.transaction() as repos:
            repos.jobs.enqueue(JobKind.ANALYSE_STUDY, phantom.study_uid, 0.0, 0.0)
        node.job_wakeup.notify()
        wait_until(lambda: _job_state(node, JobKind.ANALYSE_STUDY, phantom.study_uid) is JobState.DONE,
                   timeout_s=60)
        node.runner.run_pending()
        with node.db.reading() as repos:
            assert repos.results.latest(phantom.study_uid) is not None
            assert len(repos.results.created_before(float("inf"))) == 1
            assert len(repos.outbox.items()) == outbox_rows
        # Logs carry no PHI.
        log_text = (settings.log_dir / "hemex.log").read_text() if (settings.log_dir / "hemex.log").exists() else ""
        assert phantom.patient_id not in log_text
    finally:
        node.stop()


def test_pacs_down_receives_everything_when_back(tmp_path: Path, smtp: SmtpReceiver,
                                                 webhook: HttpReceiver) -> None:
    from tests.support.peers import start_orthanc

    pacs_port = free_port()
    phantom = make_head_ct_series(tmp_path / "ct", slices=24, hematoma_radii_mm=(10.0, 8.0, 8.0))
    placeholder = Orthanc(None, pacs_port, 0, "ORTHANC", tmp_path)  # type: ignore[arg-type]
    settings = _node_settings(tmp_path, placeholder, smtp, webhook)
    node = Node(settings)
    node.start()
    orthanc = None
    try:
        storescu(node.dicom_port, phantom.paths)
        wait_until(lambda: node.outbox.counts_by_state().get("pending", 0) >= 2
                   and _attempted(node), timeout_s=120, interval_s=0.5)
        orthanc = start_orthanc(tmp_path / "late-orthanc", dicom_port=pacs_port)
        wait_until(lambda: len(orthanc.instances()) >= 4, timeout_s=60, interval_s=0.5)
        assert {str(orthanc.instance_tags(i)["Modality"]) for i in orthanc.instances()} == {"SR", "SEG", "KO", "OT"}
    finally:
        node.stop()
        if orthanc is not None:
            orthanc.stop()


def _attempted(node: Node) -> bool:
    with node.db.reading() as repos:
        return any(item.attempts for item in repos.outbox.items() if item.channel == "dicom")


def _job_state(node: Node, kind: JobKind, key: str) -> JobState | None:
    with node.db.reading() as repos:
        return repos.jobs.state_of(kind, key)
