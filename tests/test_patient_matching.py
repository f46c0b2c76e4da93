"""Matching stored HL7 data to a CT study, with message streams sent over real MLLP.

Synthetic patients and values. CT acquired 2024-01-01 11:00 (local time); the default
window is 24 h before to 6 h after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from daemon.clinical.intake_service import ClinicalIntake
from daemon.clinical.patient_matching import clinical_variables_for_study
from daemon.config import Hl7Settings, Settings
from daemon.state.database import Database
from domain.clinical import ClinicalVariables
from tests.support.hl7_peers import Intake, MllpClient, adt, merge, msa, obx, oru, rde, start_intake
from tests.support.peers import wait_until

CT = datetime(2024, 1, 1, 11, 0)
SETTINGS = Hl7Settings()


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    running = start_intake(tmp_path)
    yield running
    running.listener.stop()
    running.processor.stop()


def send_all(intake: Intake, *messages: str) -> None:
    with MllpClient(intake.port) as client:
        acks = [client.send(m) for m in messages]
    assert [msa(a)[1] for a in acks] == ["AA"] * len(messages), acks
    assert intake.processor.wait_idle()


def match(intake: Intake, patient_id: str = "P001", issuer: str | None = "HOSP", accession: str | None = None,
          ct: datetime | None = CT) -> tuple[ClinicalVariables, dict]:
    return clinical_variables_for_study(intake.db, patient_id, issuer, accession, ct, SETTINGS)


def vitals_and_labs(control_id: str, patient_id: str = "P001") -> str:
    return oru(control_id, [
        obx(1, "8480-6", "182", "mm[Hg]", "20240101100000"),
        obx(2, "8462-4", "95", "mm[Hg]", "20240101100000"),
        obx(3, "6301-6", "1.4", "{INR}", "20240101103000"),
        obx(4, "777-3", "210", "10*9/L", "20240101103000"),
        obx(5, "11368-8", "20240101083000", "", "20240101100000", value_type="DTM"),
    ], patient_id=patient_id)


def test_in_order_stream_gives_every_variable_with_provenance(intake: Intake) -> None:
    send_all(intake, adt("A1", dob="19500615", sex="F"), vitals_and_labs("L1"), rde("RX1", "B01AF01"))
    variables, provenance = match(intake)
    assert variables.systolic_bp_mmhg == 182 and variables.diastolic_bp_mmhg == 95
    assert variables.pt_inr == 1.4 and variables.platelets_10e9_per_l == 210
    assert variables.anticoagulant_use is True and variables.antiplatelet_use is None
    assert variables.onset_time == datetime(2024, 1, 1, 8, 30)
    assert variables.hours_onset_to_ct == 2.5
    assert variables.age_years == 73 and variables.sex == "F"
    assert provenance["pt_inr"].source == "LN:6301-6" and provenance["pt_inr"].hours_from_ct == -0.5
    assert provenance["anticoagulant_use"].source == "ATC:B01AF01"
    assert provenance["age_years"].source == "PID-7"


def test_out_of_order_labs_before_the_adt_still_match(intake: Intake) -> None:
    send_all(intake, vitals_and_labs("L1"), adt("A1", dob="19800101", sex="M"))
    variables, _ = match(intake)
    assert variables.pt_inr == 1.4
    assert (variables.age_years, variables.sex) == (44, "M")
    assert len(intake.db.query("SELECT * FROM clinical_patients")) == 1


def test_nearest_before_the_ct_wins_and_labs_after_the_ct_are_used(intake: Intake) -> None:
    send_all(intake, oru("L1", [
        obx(1, "6301-6", "1.1", "{INR}", "20240101080000"),
        obx(2, "6301-6", "1.5", "{INR}", "20240101105000"),
        obx(3, "6301-6", "2.0", "{INR}", "20240101113000"),  # after the CT, nearer: loses
        obx(4, "718-7", "9.9", "g/dL", "20231231050000"),  # 30 h before: outside the window
    ]))
    before_labs, _ = match(intake)
    assert before_labs.pt_inr == 1.5 and before_labs.hemoglobin_g_per_dl is None
    assert before_labs.platelets_10e9_per_l is None
    # Labs drawn after the CT arrive later; the next lookup (the final report) sees them.
    send_all(intake, oru("L2", [obx(1, "777-3", "95", "10*3/uL", "20240101120000"),
                                obx(2, "26515-7", "99", "10*3/uL", "20240101180000")]))  # 7 h after: outside
    variables, provenance = match(intake)
    assert variables.platelets_10e9_per_l == 95 and provenance["platelets_10e9_per_l"].hours_from_ct == 1.0


def test_a40_merge_moves_observations_and_both_ids_match(intake: Intake) -> None:
    send_all(intake, vitals_and_labs("L1", patient_id="TEMP9"), adt("A1", patient_id="MRN5"),
             merge("M1", new_id="MRN5", old_id="TEMP9"))
    by_new, _ = match(intake, "MRN5")
    by_old, _ = match(intake, "TEMP9")
    assert by_new.pt_inr == by_old.pt_inr == 1.4
    assert by_new.age_years == by_old.age_years == 73
    keys = {r["patient_key"] for r in intake.db.query("SELECT patient_key FROM clinical_observations")}
    survivor = intake.db.query("SELECT patient_key FROM clinical_patient_ids WHERE patient_id = 'MRN5'")[0][0]
    assert keys == {survivor}
    # Messages still using the old ID after the merge land on the surviving patient.
    send_all(intake, oru("L2", [obx(1, "9269-2", "11", "", "20240101104500")], patient_id="TEMP9"))
    assert match(intake, "MRN5")[0].gcs == 11


def test_issuer_and_accession_rules(intake: Intake) -> None:
    send_all(intake,
             oru("L1", [obx(1, "6301-6", "1.4", "{INR}", "20240101103000")], patient_id="P7", issuer="HOSP"),
             oru("L2", [obx(1, "6301-6", "3.0", "{INR}", "20240101103000")], patient_id="P7", issuer="OTHER"),
             oru("L3", [obx(1, "8480-6", "150", "mm[Hg]", "20240101104500")], patient_id="P7", issuer="HOSP",
                 accession="ACC-OTHER"),
             oru("L4", [obx(1, "8480-6", "201", "mm[Hg]", "20240101104000")], patient_id="ER-123",
                 issuer="HOSP", accession="ACC-CT"))
    assert match(intake, "P7", "HOSP")[0].pt_inr == 1.4
    assert match(intake, "P7", "OTHER")[0].pt_inr == 3.0
    assert match(intake, "P7", None)[0].pt_inr is None  # same ID at two authorities: ambiguous
    # An observation ordered for another exam is not used; one for this exam is, by accession.
    variables, provenance = match(intake, "P7", "HOSP", accession="ACC-CT")
    assert variables.systolic_bp_mmhg == 201 and provenance["systolic_bp_mmhg"].matched_by == "accession"
    assert match(intake, "P7", "HOSP", accession="ACC-OTHER")[0].systolic_bp_mmhg == 150


def test_duplicates_are_counted_once_and_corrections_replace(intake: Intake) -> None:
    first = oru("L1", [obx(1, "6301-6", "1.4", "{INR}", "20240101103000")])
    send_all(intake, first, first)
    assert len(intake.db.query("SELECT * FROM clinical_observations")) == 1
    send_all(intake, oru("L2", [obx(1, "6301-6", "1.9", "{INR}", "20240101103000", status="C")]))
    rows = intake.db.query("SELECT value_num FROM clinical_observations")
    assert [r["value_num"] for r in rows] == [1.9]
    assert match(intake)[0].pt_inr == 1.9


def test_without_ct_time_only_demographics_match(intake: Intake) -> None:
    send_all(intake, adt("A1", dob="19500615", sex="M"), vitals_and_labs("L1"))
    variables, provenance = match(intake, ct=None)
    assert variables.pt_inr is None and variables.sex == "M" and set(provenance) == {"age_years", "sex"}


def test_clinical_update_reaches_the_waiting_study(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, hl7=Hl7Settings(host="127.0.0.1", port=0, min_free_disk_mb=0))
    db = Database(settings.database_path)
    now = time.time()
    db.connection().execute(
        "INSERT INTO studies(study_uid, handle, patient_id, issuer_of_patient_id, accession_number,"
        " study_datetime, created_at, updated_at) VALUES ('1.2.3', 'st-test', 'P001', 'HOSP', NULL,"
        " '20240101110000', ?, ?)", (now, now))
    calls: list[tuple[list[str], dict[str, bool]]] = []
    intake = ClinicalIntake(settings, db)
    intake.start(on_studies_updated=lambda uids, complete: calls.append((uids, complete)))
    try:
        with MllpClient(intake.port) as client:
            assert msa(client.send(oru("L1", [obx(1, "6301-6", "1.4", "{INR}", "20240101103000")])))[1] == "AA"
            wait_until(lambda: len(calls) == 1, timeout_s=10)
            assert calls[0] == (["1.2.3"], {"1.2.3": False})  # SBP, DBP, onset, anticoagulant missing
            assert msa(client.send(vitals_and_labs("L2")))[1] == "AA"
            assert msa(client.send(oru("L3", [obx(1, "HEMEX-ANTICOAG", "N^No", "", "20240101100000",
                                                   value_type="CWE", system="L")])))[1] == "AA"
            wait_until(lambda: len(calls) == 3, timeout_s=10)
    finally:
        intake.stop()
    assert calls[-1] == (["1.2.3"], {"1.2.3": True})
    from domain.analysis import StudyIdentity

    identity = StudyIdentity("1.2.3", "st-test", "P001", "HOSP", None, None, "20240101110000")
    variables = intake.lookup(identity, CT)
    assert variables.anticoagulant_use is False and variables.hours_onset_to_ct == 2.5
