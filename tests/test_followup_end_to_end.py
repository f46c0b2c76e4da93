"""The loop closed with real peers: dcmtk storescu sends a baseline head CT and then, for the
same patient, a follow-up with a larger hematoma (24 h later), one with a smaller one
(30 h: a second follow-up) and one outside the window (100 h); Orthanc is the PACS, an
MLLP server the EHR, HTTP servers and aiosmtpd the on-call contacts.

The phantoms are synthetic (tests/support/phantoms.py; sizes chosen so that the larger
one grows by more than 6 mL and 33 %, the smaller one shrinks by less than the
evacuation limits). What is checked: the roles, the follow-up SRs in Orthanc and what
they reference, the ORU, the expansion alert, its acknowledgement over HTTP by its link,
that an acknowledged alert does not escalate, and that an evacuation the EHR reports
afterwards (ORM^O01 over MLLP) re-labels the follow-ups in new SRs naming the old ones.
"""

from __future__ import annotations

import io
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
import pytest

from daemon.app import Node
from daemon.cli import main as hemex_main
from domain.alerts import AlertStep
from domain.followup import Role
from domain.jobs import JobKind
from tests.support.alert_peers import HttpReceiver, SmtpReceiver
from tests.support.hl7_peers import AckingServer, MllpClient, msa, orm_procedure
from tests.support.node_settings import loopback_node_settings
from tests.support.peers import Orthanc, free_port, wait_until
from tests.support.phantoms import PhantomSeries, make_head_ct_series
from tests.support.sr_reading import sr_numeric_values, walk_content
from tests.test_end_to_end import storescu

T0 = datetime(2026, 11, 23, 8, 0)
PATIENT = "PH-LOOP-7"


def _phantom(root: Path, name: str, radii: tuple[float, float, float], hours: float) -> PhantomSeries:
    return make_head_ct_series(root / name, slices=28, rows=256, pixel_mm=0.9, slice_mm=2.5,
                               hematoma_radii_mm=radii, patient_id=PATIENT, accession=f"ACC-{name}",
                               acquired_at=T0 + timedelta(hours=hours), seed=hash(name) % 1000)


def _followup_sr_list(orthanc: Orthanc) -> list[pydicom.Dataset]:
    found = []
    for orthanc_id in orthanc.instances():
        tags = orthanc.instance_tags(orthanc_id)
        if tags.get("SeriesDescription") == "hemex hematoma follow-up":
            found.append(pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{orthanc_id}/file"))))
    return sorted(found, key=lambda ds: int(ds.InstanceNumber))


def _followup_srs(orthanc: Orthanc) -> dict[str, pydicom.Dataset]:
    """The newest follow-up SR of each study."""
    return {str(ds.StudyInstanceUID): ds for ds in _followup_sr_list(orthanc)}


def _labels(sr: pydicom.Dataset) -> dict[str, str]:
    return {str(i.ConceptNameCodeSequence[0].CodeMeaning): str(i.ConceptCodeSequence[0].CodeMeaning)
            for i in walk_content(sr) if i.ValueType == "CODE"}


def _has_result(node: Node, study_uid: str) -> bool:
    with node.db.reading() as repos:
        return repos.results.latest(study_uid) is not None


def _idle(node: Node) -> bool:
    with node.db.reading() as repos:
        figures = repos.monitoring.figures()
    return not any(state in ("pending", "running") and kind != JobKind.ESCALATE_ALERT.value
                   for (kind, state), count in figures.jobs.items() if count)


@pytest.fixture
def contacts() -> Iterator[tuple[HttpReceiver, SmtpReceiver]]:
    first, second = HttpReceiver.start(), SmtpReceiver.start()
    yield first, second
    first.stop()
    second.stop()


def test_follow_ups_are_paired_reported_alerted_and_acknowledged(
        tmp_path: Path, orthanc: Orthanc, webhook: HttpReceiver, contacts: tuple[HttpReceiver, SmtpReceiver],
        capsys: pytest.CaptureFixture[str]) -> None:
    first_contact, second_contact = contacts
    ehr = AckingServer()
    metrics_port = free_port()
    settings = loopback_node_settings(
        tmp_path / "node", orthanc,
        metrics={"host": "127.0.0.1", "port": metrics_port},
        hl7={"outbound_host": "127.0.0.1", "outbound_port": ehr.port},
        report={"validate_with_dicom3tools": False},
        alerts={"min_volume_ml": 1000.0,  # no volume alert: only the follow-up's expansion alerts
                "webhooks": [{"name": "oncall", "url": webhook.url}],
                "email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": second_contact.port,
                          "sender": "hemex@test.invalid", "recipients": []},
                "acknowledgement": {"public_url": f"http://127.0.0.1:{metrics_port}", "escalate_after_s": 3600},
                "contacts": [{"name": "first", "webhook_url": first_contact.url},
                             {"name": "second", "email": ["second@test.invalid"]}],
                "roster": [{"contacts": ["first", "second"]}]},
    )
    studies = {name: _phantom(tmp_path / "ct", name, radii, hours) for name, radii, hours in (
        ("baseline", (14.0, 12.0, 11.0), 0), ("larger", (18.0, 15.0, 14.0), 24),
        ("smaller", (13.0, 11.0, 10.0), 30), ("outside", (14.0, 12.0, 11.0), 100))}
    node = Node(settings)
    node.start()
    try:
        for name, phantom in studies.items():  # one after the other, as the patient was scanned
            storescu(node.dicom_port, phantom.paths)
            wait_until(lambda p=phantom: _has_result(node, p.study_uid), timeout_s=120, interval_s=0.2)
        wait_until(lambda: _idle(node) and len(_followup_srs(orthanc)) >= 2, timeout_s=120, interval_s=0.3)
        uid = {name: phantom.study_uid for name, phantom in studies.items()}
        with node.db.reading() as repos:
            roles = {name: repos.followups.pairing(uid[name]) for name in studies}
            outcome = repos.followups.outcome_of(uid["baseline"])
            baseline_sr_uid = repos.results.latest(uid["baseline"]).sr_sop_uid  # type: ignore[union-attr]
        assert {name: p.role for name, p in roles.items()} == {  # type: ignore[union-attr]
            "baseline": Role.BASELINE, "larger": Role.FOLLOWUP, "smaller": Role.LATER_FOLLOWUP,
            "outside": Role.BASELINE}
        assert "beyond the 72 h window" in roles["outside"].reason  # type: ignore[union-attr]
        # The baseline's observed outcome is its first follow-up's: expansion.
        assert outcome is not None and outcome.followup_study_uid == uid["larger"] and outcome.label == 1
        assert outcome.change.change_ml > 6.0 and outcome.change.hours_between == pytest.approx(24.0)

        reports = _followup_srs(orthanc)
        assert set(reports) == {uid["larger"], uid["smaller"]}  # none for the baseline or the late CT
        for name in ("larger", "smaller"):
            sr = reports[uid[name]]
            other = {str(i.ReferencedSOPInstanceUID) for study in sr.PertinentOtherEvidenceSequence
                     for series in study.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
            assert baseline_sr_uid in other  # the baseline SR, as PACS holds it
        larger, smaller = reports[uid["larger"]], reports[uid["smaller"]]
        assert sr_numeric_values(larger)["Change in hematoma volume since baseline CT"] == pytest.approx(
            outcome.change.change_ml, abs=1e-3)
        labels = {str(sr.StudyInstanceUID): _labels(sr) for sr in (larger, smaller)}
        assert labels[uid["larger"]]["Hematoma expansion observed (> 6 mL or > 33 %)"] == "Yes"
        assert labels[uid["smaller"]]["Hematoma expansion observed (> 6 mL or > 33 %)"] == "No"
        assert labels[uid["smaller"]]["Role of this CT in the patient's follow-up"] == "Later follow-up CT of the baseline"
        assert sr_numeric_values(smaller)["Change in hematoma volume since baseline CT"] < 0

        # The EHR got a follow-up ORU for each follow-up (besides the four reports' own).
        wait_until(lambda: sum(b"HEMEX-ICH-FU" in m for m in ehr.received) == 2, timeout_s=30)

        # One expansion alert (the larger follow-up): the broadcast webhook and the first
        # on-call contact each got it, with its code and acknowledgement link.
        wait_until(lambda: webhook.requests and first_contact.requests, timeout_s=30)
        assert len(webhook.requests) == 1 and len(first_contact.requests) == 1
        alert = json.loads(first_contact.requests[0].body)
        assert alert["schema"] == "hemex.followup-alert/1" and alert["change"]["expansion"] is True
        link, code = alert["acknowledgement"]["url"], alert["acknowledgement"]["code"]
        assert link.startswith(f"http://127.0.0.1:{metrics_port}/alerts/ack/")

        # Following the link shows the alert and a button; only the button acknowledges.
        with urllib.request.urlopen(link, timeout=10) as response:
            page = response.read().decode()
        assert response.status == 200 and code in page and "<form" in page and PATIENT not in page
        with node.db.reading() as repos:
            group = repos.alerts.group_by_code(code)
        assert group is not None and group.open
        form = urllib.parse.urlencode({"by": "Dr Test"}).encode()
        with urllib.request.urlopen(urllib.request.Request(link, data=form, method="POST"), timeout=10) as response:
            assert "Acknowledged" in response.read().decode()
        with node.db.reading() as repos:
            group = repos.alerts.group_by_code(code)
        assert group is not None and not group.open and group.acknowledged_by == "Dr Test (link)"
        steps = [e.step for e in group.events]
        for step in (AlertStep.QUEUED, AlertStep.SENT, AlertStep.DELIVERED, AlertStep.ACKNOWLEDGED):
            assert step in steps
        # A forged token is refused.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(link[:-3] + "xyz", timeout=10)
        assert refused.value.code == 404

        # Acknowledged: the escalation, when due, sends nothing to the second contact.
        with node.db.transaction() as repos:
            repos.jobs.enqueue(JobKind.ESCALATE_ALERT, group.ref, 0.0, 0.0)
        node.job_wakeup.notify()
        wait_until(lambda: _idle(node), timeout_s=30)
        node.outbox.deliver_due()
        assert second_contact.messages == []

        # The EHR reports an evacuation 12 h after the baseline, after both follow-ups went
        # out: each gets a new follow-up SR naming the previous one. The larger one grew
        # anyway (still expansion); the smaller one can no longer be labelled.
        assert node.hl7 is not None
        with MllpClient(node.hl7.port) as client:
            ack = client.send(orm_procedure("EVAC-1", "CM", (T0 + timedelta(hours=12)).strftime("%Y%m%d%H%M%S"),
                                            patient_id=PATIENT, issuer="HOSP-A"))
        assert msa(ack)[1] == "AA"
        wait_until(lambda: len(_followup_sr_list(orthanc)) == 4 and _idle(node), timeout_s=60, interval_s=0.3)
        newest = _followup_srs(orthanc)
        for name, old_sr in (("larger", larger), ("smaller", smaller)):
            new_sr = newest[uid[name]]
            assert new_sr.InstanceNumber == 2 and new_sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0] \
                .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old_sr.SOPInstanceUID
        assert _labels(newest[uid["larger"]])["Hematoma expansion observed (> 6 mL or > 33 %)"] == "Yes"
        assert _labels(newest[uid["smaller"]])["Hematoma expansion observed (> 6 mL or > 33 %)"] == "Not assessable"
        with node.db.reading() as repos:
            outcome = repos.followups.outcome_of(uid["baseline"])
        assert outcome is not None and outcome.label == 1 and outcome.change.evacuation == "procedure"
        assert len(webhook.requests) == 1  # the expansion was alerted once, not again

        # The time to acknowledge is a metric.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert re.search(r"^hemex_alert_time_to_acknowledge_seconds_count 1\.0$", metrics, re.MULTILINE)
        assert re.search(r"^hemex_alert_time_to_alert_seconds_count 1\.0$", metrics, re.MULTILINE)
        assert 'hemex_followup_studies{role="later_followup"} 1.0' in metrics
    finally:
        node.stop()
        ehr.stop()
    # hemex alerts shows the steps (from the stopped node's database).
    capsys.readouterr()
    assert hemex_main(["alerts", "--data-dir", str(settings.data_dir)]) == 0
    listed = capsys.readouterr().out
    assert code in listed and "acknowledged" in listed and "Dr Test" in listed and PATIENT not in listed
