"""Procedures from the EHR (evacuation evidence for follow-up labels), over real MLLP: a
completed ORM^O01 order and an ADT PR1 segment are stored with their code and time; a new
or cancelled order is not; an A40 merge moves them to the surviving patient."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tests.support.hl7_peers import MllpClient, adt, merge, msa, orm_procedure, start_intake


def orm(control_id: str, status: str, order_control: str = "SC", code: str = "00C00ZZ") -> str:
    return orm_procedure(control_id, status, "20261123133000", order_control, code)


def adt_with_procedure(control_id: str, patient_id: str = "P001") -> str:
    return adt(control_id, "A08", patient_id=patient_id).rstrip("\r") + (
        "\rPR1|1||61313^Craniotomy for intracerebral hematoma^C4||20261123150000\r")


def test_procedures_are_stored_and_follow_merges(tmp_path: Path) -> None:
    intake = start_intake(tmp_path)
    try:
        with MllpClient(intake.port) as client:
            acks = [client.send(m) for m in (
                orm("PR-1", "CM"),                           # completed: stored
                orm("PR-2", "", order_control="NW", code="00C03ZZ"),  # new order, not done yet
                orm("PR-3", "CM", order_control="CA", code="00C04ZZ"),  # cancelled
                adt_with_procedure("PR-4", patient_id="P002"),  # documented on another ID...
                merge("PR-5", "P001", "P002"),               # ...merged into P001
            )]
        assert [msa(a)[1] for a in acks] == ["AA"] * 5
        assert intake.processor.wait_idle()
        with intake.db.reading() as repos:
            (key,) = repos.clinical.patient_keys("P001", "HOSP")
            found = repos.clinical.procedures_between([key], datetime(2026, 11, 23), datetime(2026, 11, 24))
        assert [(p.code_system, p.code, p.performed_at) for p in found] == [
            ("I10P", "00C00ZZ", datetime(2026, 11, 23, 13, 30)), ("C4", "61313", datetime(2026, 11, 23, 15, 0))]
        assert all("HL7 message" in p.source for p in found)
    finally:
        intake.listener.stop()
        intake.processor.stop()
