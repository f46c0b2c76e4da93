"""Matching stored HL7 data to a CT study, with message streams sent over real MLLP.

Synthetic patients and values. CT acquired 2024-01-01 11:00 (local time); the default
window is 24 h before to 6 h after.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from daemon.analyse.clinical_match import match_clinical
from daemon.analyse.clinical_update_job import ClinicalUpdateStage
from daemon.config import Hl7Settings
from daemon.jobs.runner import JobRunner
from domain.clinical import ClinicalVariables, PatientIdentifier, Provenance
from domain.jobs import JobKind, JobState
from domain.study import ReceivedInstance, StudyIdentity
from tests.support.hl7_peers import Intake, MllpClient, adt, merge, msa, obx, oru, rde, start_intake

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
          ct: datetime | None = CT) -> tuple[ClinicalVariables, dict[str, Provenance]]:
    identity = StudyIdentity("1.2.3", "st-test", patient_id, issuer, accession, None, None)
    with intake.db.reading() as repos:
        matched = match_clinical(repos, identity, ct, SETTINGS)
    return matched.variables, dict(matched.provenance)


def observations(intake: Intake) -> list[tuple[int, float | None]]:
    """(patient key, value) of every stored observation, by message."""
    found = []
    with intake.db.reading() as repos:
        for message in repos.hl7_messages.received_since():
            found += [(o.patient_key, o.observation.value_num)
                      for o in repos.clinical.observations_of_message(message.id)]
    return found


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
    with intake.db.reading() as repos:  # one patient: the ADT found the one the labs made
        assert repos.clinical.key_of(PatientIdentifier("P001", "HOSP")) == 1


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
    with intake.db.reading() as repos:
        survivor = repos.clinical.key_of(PatientIdentifier("MRN5", "HOSP"))
    assert {key for key, _ in observations(intake)} == {survivor}
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
    assert len(observations(intake)) == 1
    send_all(intake, oru("L2", [obx(1, "6301-6", "1.9", "{INR}", "20240101103000", status="C")]))
    assert [value for _, value in observations(intake)] == [1.9]
    assert match(intake)[0].pt_inr == 1.9


def test_without_ct_time_only_demographics_match(intake: Intake) -> None:
    send_all(intake, adt("A1", dob="19500615", sex="M"), vitals_and_labs("L1"))
    variables, provenance = match(intake, ct=None)
    assert variables.pt_inr is None and variables.sex == "M" and set(provenance) == {"age_years", "sex"}


def test_clinical_update_finalises_a_waiting_study_once_its_variables_are_in(intake: Intake) -> None:
    """The intake queues a clinical_update job per patient; it finalises the patient's study
    (still being analysed here) only when every predictor variable is known."""
    instance = ReceivedInstance("1.2.3.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.3.9", "CT", "", "P001",
                                "HOSP", None, "20240101110000", None)
    with intake.db.transaction() as repos:
        repos.images.record(instance, Path("/x"), 1, "CT", 0.0, 0.0)
        repos.jobs.enqueue(JobKind.ANALYSE_STUDY, "1.2.3", 1e12, 0.0)  # being analysed
    stage = ClinicalUpdateStage(SETTINGS, intake.db)
    runner = JobRunner(intake.db, {JobKind.CLINICAL_UPDATE: stage.clinical_update})

    def finalise() -> JobState | None:
        with intake.db.reading() as repos:
            return repos.jobs.state_of(JobKind.FINALISE_STUDY, "1.2.3")

    send_all(intake, oru("L1", [obx(1, "6301-6", "1.4", "{INR}", "20240101103000")]))
    assert runner.run_pending() == 1 and finalise() is None  # SBP, DBP, onset, anticoagulant missing
    send_all(intake, vitals_and_labs("L2"))
    assert runner.run_pending() == 1 and finalise() is None  # anticoagulant still missing
    send_all(intake, oru("L3", [obx(1, "HEMEX-ANTICOAG", "N^No", "", "20240101100000", value_type="CWE",
                                    system="L")]))
    assert runner.run_pending() == 1 and finalise() is JobState.PENDING
    variables, _ = match(intake)
    assert variables.anticoagulant_use is False and variables.hours_onset_to_ct == 2.5
