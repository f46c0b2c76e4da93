"""Clinical context end to end (issue 3): the running node with HL7 on, real peers only.

dcmtk storescu is the scanner, Orthanc the PACS, a real MLLP client socket the lab/EHR
feed, and a little MLLP server the EHR that receives the outbound ORU^R01. The CTs are
synthetic phantoms (tests/support/phantoms.py: CT acquired 2026-11-22 10:16:10, Issuer
of Patient ID "HOSP-A"); patients, identifiers and values are made up.

Scenarios share one Orthanc and one EHR; the nodes differ by how long they wait for
clinical data (10 min: the final must come from the labs arriving; 3 s: the wait runs
out). Each scenario has its own patient and study, so they do not see each other's data.
"""

from __future__ import annotations

import io
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from daemon.app import Node
from daemon.config import Settings, load_settings
from daemon.state.mask_files import load_mask, save_mask
from domain.clinical import PREDICTOR_VARIABLES, PatientIdentifier
from domain.handles import study_handle
from domain.jobs import JobKind, JobState
from tests.support.hl7_peers import AckingServer, MllpClient, adt, msa, msh, obx, oru, pid, segment
from tests.support.peers import Orthanc, start_orthanc, wait_until
from tests.support.phantoms import PhantomSeries, make_head_ct_series
from tests.support.sr_reading import sr_numeric_values, sr_texts, walk_content

ISSUER = "HOSP-A"  # the phantom's Issuer of Patient ID
SR_TIMEOUT_S = 240  # analysis + dciodvfy/JVM validation on a busy 2-core machine
VOLUME_TOLERANCE = 0.15
MISSING = "Clinical variable not available"


def job_state(node: Node, kind: JobKind, key: str) -> JobState | None:
    with node.db.reading() as repos:
        return repos.jobs.state_of(kind, key)


# --- peers ---------------------------------------------------------------------------

class Pacs:
    """Orthanc seen through its REST API: the SRs of one study, oldest first."""

    def __init__(self, orthanc: Orthanc) -> None:
        self.orthanc = orthanc
        self._tags: dict[str, dict] = {}  # instances never change once stored
        self._files: dict[str, Dataset] = {}

    def srs(self, study_uid: str) -> list[Dataset]:
        for orthanc_id in self.orthanc.instances():
            if orthanc_id not in self._tags:
                self._tags[orthanc_id] = self.orthanc.instance_tags(orthanc_id)
        found = []
        for orthanc_id, tags in self._tags.items():
            if tags.get("Modality") == "SR" and tags.get("StudyInstanceUID") == study_uid:
                if orthanc_id not in self._files:
                    data = self.orthanc.get_bytes(f"/instances/{orthanc_id}/file")
                    self._files[orthanc_id] = pydicom.dcmread(io.BytesIO(data))
                found.append(self._files[orthanc_id])
        return sorted(found, key=lambda ds: int(ds.InstanceNumber))

    def wait_for_srs(self, study_uid: str, count: int, timeout_s: float = SR_TIMEOUT_S) -> list[Dataset]:
        wait_until(lambda: len(self.srs(study_uid)) >= count, timeout_s=timeout_s, interval_s=0.5)
        return self.srs(study_uid)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    orthanc = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield Pacs(orthanc)
    orthanc.stop()


@pytest.fixture(scope="module")
def ehr() -> Iterator[AckingServer]:
    server = AckingServer("AA")
    yield server
    server.stop()


def start_node(data_dir: Path, pacs: Pacs, ehr: AckingServer, wait_for_clinical_s: float,
               validate: bool) -> Node:
    """A started node on ports the system chose (port 0), so no other process can take them."""
    node = Node(_settings(data_dir, pacs, ehr, wait_for_clinical_s, validate))
    node.start()
    return node


def _settings(data_dir: Path, pacs: Pacs, ehr: AckingServer, wait_for_clinical_s: float,
              validate: bool) -> Settings:
    return load_settings(
        None,
        data_dir=data_dir,
        dicom={"host": "127.0.0.1", "port": 0, "allowed_calling_ae_titles": ["STORESCU"]},
        series={"quiet_period_s": 1.0},
        destinations=[{"name": "pacs", "ae_title": pacs.orthanc.ae_title, "host": "127.0.0.1",
                       "port": pacs.orthanc.dicom_port}],
        outbox={"poll_interval_s": 0.5, "retry_initial_s": 0.5, "retry_max_s": 2.0},
        report={"validate_with_dicom3tools": validate},
        hl7={"host": "127.0.0.1", "port": 0, "wait_for_clinical_s": wait_for_clinical_s,
             "outbound_host": "127.0.0.1", "outbound_port": ehr.port, "outbound_timeout_s": 5.0},
    )


@pytest.fixture(scope="module")
def waiting_node(tmp_path_factory: pytest.TempPathFactory, pacs: Pacs, ehr: AckingServer) -> Iterator[Node]:
    """Waits 10 min for clinical data and validates every object (dciodvfy, DicomSRValidator)."""
    node = start_node(tmp_path_factory.mktemp("waiting-node"), pacs, ehr, 600.0, validate=True)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def quick_node(tmp_path_factory: pytest.TempPathFactory, pacs: Pacs, ehr: AckingServer) -> Iterator[Node]:
    """Waits 3 s; validation is off (the waiting node's scenario and test_report_builders cover it)."""
    node = start_node(tmp_path_factory.mktemp("quick-node"), pacs, ehr, 3.0, validate=False)
    yield node
    node.stop()


def phantom(folder: Path, patient_id: str, accession: str) -> PhantomSeries:
    return make_head_ct_series(folder, slices=24, rows=256, pixel_mm=0.9, patient_id=patient_id,
                               accession=accession)


def send_ct(node: Node, ct: PhantomSeries) -> None:
    result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1", str(node.dicom_port),
                             *map(str, ct.paths)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def send_stream(node: Node, *messages: str) -> list[str]:
    """Send messages on one MLLP connection; returns their ACKs."""
    assert node.hl7 is not None
    with MllpClient(node.hl7.port) as client:
        return [client.send(m) for m in messages]


def codes_of(acks: list[str]) -> list[str]:
    return [msa(ack)[1] for ack in acks]


# --- messages (synthetic) ---------------------------------------------------------------

def admission(control_id: str, patient_id: str, dob: str = "19500615", sex: str = "F") -> str:
    return adt(control_id, "A01", patient_id=patient_id, issuer=ISSUER, dob=dob, sex=sex)


def merge_into(control_id: str, patient_id: str, prior_id: str, dob: str, sex: str) -> str:
    """ADT^A40: ``prior_id`` merged into ``patient_id``, whose PID (and demographics) it carries."""
    return "\r".join([msh(control_id, "ADT^A40^ADT_A39"), "EVN|A40|20261122101000",
                      pid(patient_id, ISSUER, dob, sex), f"MRG|{prior_id}^^^{ISSUER}^MR"]) + "\r"


@dataclass(frozen=True)
class Labs:
    """One ED panel: vitals, coagulation, anticoagulant use, onset (times on the CT day)."""

    sbp: str
    dbp: str
    inr: str
    platelets_k_per_ul: str
    fibrinogen_mg_dl: str
    anticoagulant: str  # Y or N
    onset: str          # DTM
    drawn: str = "20261122100000"

    def message(self, control_id: str, patient_id: str) -> str:
        return oru(control_id, [
            obx(1, "8480-6", self.sbp, "mm[Hg]", "20261122094500"),
            obx(2, "8462-4", self.dbp, "mm[Hg]", "20261122094500"),
            obx(3, "6301-6", self.inr, "{INR}", self.drawn),
            obx(4, "777-3", self.platelets_k_per_ul, "10*3/uL", self.drawn),
            obx(5, "3255-7", self.fibrinogen_mg_dl, "mg/dL", self.drawn),
            obx(6, "HEMEX-ANTICOAG", f"{self.anticoagulant}^{'Yes' if self.anticoagulant == 'Y' else 'No'}", "",
                "20261122094500", value_type="CWE", system="L"),
            obx(7, "11368-8", self.onset, "", "20261122094500", value_type="DTM"),
        ], obr_time=self.drawn, patient_id=patient_id, issuer=ISSUER)


# --- reading the reports back ------------------------------------------------------------

def clinical_in_sr(sr: Dataset) -> dict[str, str]:
    """Concept name -> value text ("1.4 {INR}") or coded meaning, for every TEXT/CODE item."""
    values: dict[str, str] = {}
    for item in walk_content(sr):
        name = str(item.ConceptNameCodeSequence[0].CodeMeaning)
        if item.ValueType == "TEXT" and name != MISSING:
            values.setdefault(name, str(item.TextValue))
        elif item.ValueType == "CODE":
            values.setdefault(name, str(item.ConceptCodeSequence[0].CodeMeaning))
    return values


def missing_in_sr(sr: Dataset) -> set[str]:
    return {str(item.TextValue).split(" ")[0] for item in walk_content(sr)
            if item.ValueType == "TEXT" and str(item.ConceptNameCodeSequence[0].CodeMeaning) == MISSING}


def brain_missing(sr: Dataset) -> set[str]:
    return {str(item.TextValue) for item in walk_content(sr) if item.ValueType == "TEXT"
            and str(item.ConceptNameCodeSequence[0].CodeMeaning) == "BRAIN score component not available"}


def predecessors(sr: Dataset) -> list[str]:
    return [str(sop.ReferencedSOPInstanceUID) for study in sr.get("PredecessorDocumentsSequence", [])
            for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence]


def results_for_ehr(ehr: AckingServer, study_uid: str) -> list[str]:
    """OBR-25 result status (P/F) of every ORU^R01 the EHR received for the study, in order."""
    statuses = []
    for message in list(ehr.received):
        segments = message.decode("utf-8").split("\r")
        obr = next(s for s in segments if s.startswith("OBR|")).split("|")
        if obr[3].split("^")[0] == study_uid:
            assert "ORU^R01" in segments[0]
            statuses.append(obr[25])
    return statuses


def assert_final_values(sr: Dataset, expected: dict[str, str]) -> None:
    values = clinical_in_sr(sr)
    for name, text in expected.items():
        assert values.get(name) == text, (name, values.get(name))


# --- scenarios ---------------------------------------------------------------------------

def test_labs_after_the_ct_turn_the_preliminary_into_a_final_report(
        tmp_path: Path, waiting_node: Node, pacs: Pacs, ehr: AckingServer, caplog: pytest.LogCaptureFixture) -> None:
    ct = phantom(tmp_path / "ct", "E2E-LATE-1", "ACC-LATE-1")
    send_ct(waiting_node, ct)
    (preliminary,) = pacs.wait_for_srs(ct.study_uid, 1)
    assert (preliminary.CompletionFlag, preliminary.PreliminaryFlag) == ("PARTIAL", "PRELIMINARY")
    assert missing_in_sr(preliminary) == set(PREDICTOR_VARIABLES)
    assert sr_numeric_values(preliminary)["Volume"] == pytest.approx(ct.hematoma_volume_ml, rel=VOLUME_TOLERANCE)
    wait_until(lambda: results_for_ehr(ehr, ct.study_uid) == ["P"], timeout_s=60, interval_s=0.5)

    labs = Labs(sbp="182", dbp="95", inr="1.4", platelets_k_per_ul="210", fibrinogen_mg_dl="350",
                anticoagulant="Y", onset="20261122081610")
    recurrent = oru("S1-HX", [obx(1, "HEMEX-RECURRENT-ICH", "N^No", "", "20261122094500", value_type="CWE",
                                  system="L")], patient_id=ct.patient_id, issuer=ISSUER)
    # The history first: the labs complete the predictor's variables, and the final report
    # they trigger must not race the message after them.
    acks = send_stream(waiting_node, admission("S1-ADT", ct.patient_id), recurrent,
                       labs.message("S1-LAB", ct.patient_id))
    assert codes_of(acks) == ["AA", "AA", "AA"]
    assert [msa(a)[2] for a in acks] == ["S1-ADT", "S1-HX", "S1-LAB"]

    # The final report comes from the labs arriving, long before the 10 min wait runs out.
    preliminary_again, final = pacs.wait_for_srs(ct.study_uid, 2)
    assert preliminary_again.SOPInstanceUID == preliminary.SOPInstanceUID
    assert (final.CompletionFlag, final.PreliminaryFlag) == ("COMPLETE", "FINAL")
    assert predecessors(final) == [str(preliminary.SOPInstanceUID)]
    assert missing_in_sr(final) == set()
    assert_final_values(final, {
        "Systolic blood pressure": "182 mm[Hg]",
        "Diastolic blood pressure": "95 mm[Hg]",
        "INR in Platelet poor plasma by Coagulation assay": "1.4 {INR}",
        "Platelets [#/volume] in Blood": "210 10*9/L",        # 10*3/uL = 10*9/L
        "Fibrinogen [Mass/volume] in PPP": "3.5 g/L",         # 350 mg/dL converted
        "Anticoagulant use at onset": "Yes",
        "Recurrent intracerebral hemorrhage": "No",
        "Hours from symptom onset to CT": "2 h",              # 08:16:10 -> CT 10:16:10
        "Symptom onset or last known well time": "2026-11-22T08:16",
        "Age": "76 a",                                         # PID-7 1950-06-15
        "Sex": "Female",
    })
    # The clinical values reach the BRAIN score; only IVH is left (hemex-threshold does
    # not separate intraventricular blood), so no points are claimed.
    assert brain_missing(preliminary) == {"recurrent_ich", "anticoagulation", "intraventricular_extension",
                                          "hours_onset_to_ct"}
    assert brain_missing(final) == {"intraventricular_extension"}
    assert "BRAIN score for hematoma expansion" not in sr_numeric_values(final)
    assert sr_numeric_values(final)["Volume"] == sr_numeric_values(preliminary)["Volume"]
    assert any("no validated expansion model" in text for text in sr_texts(final))
    # The EHR got the preliminary and then the final ORU^R01 of the same order.
    wait_until(lambda: results_for_ehr(ehr, ct.study_uid) == ["P", "F"], timeout_s=60, interval_s=0.5)
    # Both SRs passed dciodvfy and DicomSRValidator (a missing tool would be skipped).
    assert not any("validation skipped" in r.getMessage() for r in caplog.records)


def test_labs_arriving_while_the_ct_is_being_analysed_still_finalise_at_once(
        tmp_path: Path, waiting_node: Node, pacs: Pacs, caplog: pytest.LogCaptureFixture) -> None:
    """The labs land after the analysis looked them up but before its preliminary report
    is stored (validation takes seconds): the final must still come from the labs, not
    from the end of the 10 min wait."""
    caplog.set_level(logging.INFO, logger="daemon.analyse.analyse_job")
    ct = phantom(tmp_path / "ct", "E2E-RACE-5", "ACC-RACE-5")
    looked_up = f"clinical match study={study_handle(ct.study_uid)} "
    send_ct(waiting_node, ct)
    wait_until(lambda: any(looked_up in r.getMessage() for r in caplog.records), timeout_s=SR_TIMEOUT_S)
    labs = Labs(sbp="150", dbp="80", inr="1.1", platelets_k_per_ul="250", fibrinogen_mg_dl="300",
                anticoagulant="N", onset="20261122071610")
    assert codes_of(send_stream(waiting_node, labs.message("S5-LAB", ct.patient_id))) == ["AA"]

    preliminary, final = pacs.wait_for_srs(ct.study_uid, 2, timeout_s=120)
    assert preliminary.CompletionFlag == "PARTIAL" and missing_in_sr(preliminary) == set(PREDICTOR_VARIABLES)
    assert final.CompletionFlag == "COMPLETE" and predecessors(final) == [str(preliminary.SOPInstanceUID)]
    assert missing_in_sr(final) == set()
    assert_final_values(final, {"INR in Platelet poor plasma by Coagulation assay": "1.1 {INR}",
                                "Hours from symptom onset to CT": "3 h"})


def test_labs_before_the_ct_out_of_order_with_duplicate_and_broken_messages(
        tmp_path: Path, quick_node: Node, pacs: Pacs, ehr: AckingServer) -> None:
    ct = phantom(tmp_path / "ct", "E2E-EARLY-2", "ACC-EARLY-2")
    labs = Labs(sbp="165", dbp="88", inr="2.7", platelets_k_per_ul="145", fibrinogen_mg_dl="180",
                anticoagulant="N", onset="20261122061610")
    lab_message = labs.message("S2-LAB", ct.patient_id)
    no_pid = msh("S2-BAD", "ORU^R01^ORU_R01") + "\rOBR|1||FX|LAB^Lab panel^L\r"
    unsupported = msh("S2-SIU", "SIU^S12") + "\r" + pid(ct.patient_id, ISSUER) + "\r"
    # Labs first, then a broken one, a resend of the labs, an unsupported type, and only
    # then the admission: the same connection carries on after each refusal.
    acks = send_stream(quick_node, lab_message, no_pid, lab_message, unsupported,
                       admission("S2-ADT", ct.patient_id, dob="19620301", sex="M"))
    assert codes_of(acks) == ["AA", "AE", "AA", "AR", "AA"]
    assert msa(acks[1])[2] == "S2-BAD" and "PID" in msa(acks[1])[3]
    err = segment(acks[1], "ERR")
    assert err is not None and "HL70357" in err
    assert "SIU" in msa(acks[3])[3]
    db = quick_node.db
    assert quick_node.hl7 is not None and quick_node.hl7.processor.wait_idle()
    with db.reading() as repos:
        (lab_message_id,) = repos.hl7_messages.with_control_id("S2-LAB")
        assert repos.hl7_messages.with_control_id("S2-BAD") == repos.hl7_messages.with_control_id("S2-SIU") == []
        lab_rows = repos.clinical.observations_of_message(lab_message_id)
    assert sorted(r.observation.variable for r in lab_rows) == sorted([
        "systolic_bp_mmhg", "diastolic_bp_mmhg", "pt_inr", "platelets_10e9_per_l", "fibrinogen_g_per_l",
        "anticoagulant_use", "onset_time"])  # once each, the resend added nothing

    send_ct(quick_node, ct)
    (report,) = pacs.wait_for_srs(ct.study_uid, 1)
    assert (report.CompletionFlag, report.PreliminaryFlag) == ("COMPLETE", "FINAL")
    assert predecessors(report) == [] and missing_in_sr(report) == set()
    assert_final_values(report, {
        "Systolic blood pressure": "165 mm[Hg]",
        "INR in Platelet poor plasma by Coagulation assay": "2.7 {INR}",
        "Platelets [#/volume] in Blood": "145 10*9/L",
        "Fibrinogen [Mass/volume] in PPP": "1.8 g/L",
        "Anticoagulant use at onset": "No",
        "Hours from symptom onset to CT": "4 h",
        "Age": "64 a",
        "Sex": "Male",
    })
    # No preliminary: one result, nothing waiting to finalise, one final ORU to the EHR.
    wait_until(lambda: job_state(quick_node, JobKind.DISPATCH_REPORT, ct.study_uid) is JobState.DONE, timeout_s=30)
    with db.reading() as repos:
        assert [r.status for r in repos.results.of_study(ct.study_uid)] == ["COMPLETE"]
    assert job_state(quick_node, JobKind.FINALISE_STUDY, ct.study_uid) is None
    wait_until(lambda: results_for_ehr(ehr, ct.study_uid) == ["F"], timeout_s=60, interval_s=0.5)
    assert len(pacs.srs(ct.study_uid)) == 1


def test_merged_patient_labs_are_used(tmp_path: Path, quick_node: Node, pacs: Pacs) -> None:
    ct = phantom(tmp_path / "ct", "E2E-MERGE-3", "ACC-MERGE-3")
    temporary_id = "ER-TEMP-3"  # the emergency registration the labs were ordered under
    labs = Labs(sbp="201", dbp="110", inr="3.1", platelets_k_per_ul="98", fibrinogen_mg_dl="240",
                anticoagulant="Y", onset="20261122091610")
    acks = send_stream(quick_node, labs.message("S3-LAB", temporary_id),
                       admission("S3-ADT", ct.patient_id, dob="19400105", sex="F"),
                       merge_into("S3-MRG", ct.patient_id, temporary_id, dob="19400105", sex="F"))
    assert codes_of(acks) == ["AA", "AA", "AA"]
    assert quick_node.hl7 is not None and quick_node.hl7.processor.wait_idle()
    # The labs now belong to the surviving patient, found by the phantom's ID and issuer.
    with quick_node.db.reading() as repos:
        (lab_message_id,) = repos.hl7_messages.with_control_id("S3-LAB")
        keys = {o.patient_key for o in repos.clinical.observations_of_message(lab_message_id)}
        survivor = repos.clinical.key_of(PatientIdentifier(ct.patient_id, ISSUER))
    assert [survivor] == list(keys)

    send_ct(quick_node, ct)
    (report,) = pacs.wait_for_srs(ct.study_uid, 1)
    assert report.CompletionFlag == "COMPLETE" and missing_in_sr(report) == set()
    assert_final_values(report, {
        "Systolic blood pressure": "201 mm[Hg]",
        "INR in Platelet poor plasma by Coagulation assay": "3.1 {INR}",
        "Platelets [#/volume] in Blood": "98 10*9/L",
        "Anticoagulant use at onset": "Yes",
        "Hours from symptom onset to CT": "1 h",
        "Age": "86 a",
    })


def test_wait_runs_out_and_the_final_report_names_what_is_missing(
        tmp_path: Path, quick_node: Node, pacs: Pacs, ehr: AckingServer) -> None:
    ct = phantom(tmp_path / "ct", "E2E-NONE-4", "ACC-NONE-4")
    send_ct(quick_node, ct)
    preliminary, final = pacs.wait_for_srs(ct.study_uid, 2)
    assert preliminary.CompletionFlag == "PARTIAL" and preliminary.PreliminaryFlag == "PRELIMINARY"
    assert (final.CompletionFlag, final.PreliminaryFlag) == ("COMPLETE", "FINAL")
    assert predecessors(final) == [str(preliminary.SOPInstanceUID)]
    assert missing_in_sr(preliminary) == missing_in_sr(final) == set(PREDICTOR_VARIABLES)
    assert "Systolic blood pressure" not in clinical_in_sr(final)
    wait_until(lambda: results_for_ehr(ehr, ct.study_uid) == ["P", "F"], timeout_s=60, interval_s=0.5)


def test_the_final_report_measures_the_mask_of_the_seg_it_reuses(tmp_path: Path, waiting_node: Node,
                                                                  pacs: Pacs) -> None:
    """The final SR points at the preliminary's SEG, so its volume must come from that
    stored mask, not from masking again (a changed masking config would disagree). The
    test cuts the stored mask in half before the labs arrive."""
    ct = phantom(tmp_path / "ct", "E2E-MASK-6", "ACC-MASK-6")
    send_ct(waiting_node, ct)
    (preliminary,) = pacs.wait_for_srs(ct.study_uid, 1)
    with waiting_node.db.reading() as repos:
        result = repos.results.latest(ct.study_uid)
    assert result is not None
    geometry, mask = load_mask(result.folder)
    halved = mask.mask.copy()
    halved[: halved.shape[0] // 2] = False  # slice, row, column: drop the lower slices
    save_mask(result.folder, geometry, replace(mask, mask=halved))
    labs = Labs(sbp="150", dbp="80", inr="1.1", platelets_k_per_ul="250", fibrinogen_mg_dl="300",
                anticoagulant="N", onset="20261122091610")
    assert codes_of(send_stream(waiting_node, admission("S6-ADT", ct.patient_id),
                                labs.message("S6-LAB", ct.patient_id))) == ["AA", "AA"]
    _, final = pacs.wait_for_srs(ct.study_uid, 2)
    voxel_ml = float(np.prod(ct.spacing_mm)) / 1000
    assert sr_numeric_values(final)["Volume"] == pytest.approx(np.count_nonzero(halved) * voxel_ml, rel=1e-3)
    assert sr_numeric_values(final)["Volume"] < 0.8 * sr_numeric_values(preliminary)["Volume"]
