"""Observation codes -> ClinicalVariables: units, conversions, plausibility, coded values.

Synthetic OBX/RXE segments; the last test goes through the real MLLP listener.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from daemon.intake.hl7_parsing import (
    RawObservation,
    check_message,
    extract_content,
    parse_hl7_datetime,
)
from daemon.intake.observation_mapping import (
    DEFAULT_LOINC_MAP,
    VARIABLES,
    Observation,
    Rejection,
    map_observation,
    validate_local_code_map,
)
from domain.errors import ConfigurationError
from tests.support.hl7_peers import MllpClient, msa, obx, oru, rde, start_intake

T = datetime(2024, 1, 1, 10, 0)


def raw(code: str, value: str, unit: str = "", value_type: str = "NM", system: str = "LN",
        status: str = "F") -> RawObservation:
    return RawObservation(((system, code),), value_type, value, unit, T, status, None)


def mapped(code: str, value: str, unit: str = "", **kw: str) -> Observation:
    result = map_observation(raw(code, value, unit, **kw), {})
    assert isinstance(result, Observation), result
    return result


@pytest.mark.parametrize(("code", "value", "unit", "variable", "expected"), [
    ("777-3", "250", "10*3/uL", "platelets_10e9_per_l", 250.0),
    ("777-3", "250", "10^9/L", "platelets_10e9_per_l", 250.0),
    ("26515-7", "250", "x10E3/uL", "platelets_10e9_per_l", 250.0),
    ("3255-7", "350", "mg/dL", "fibrinogen_g_per_l", 3.5),
    ("3255-7", "3.5", "g/L", "fibrinogen_g_per_l", 3.5),
    ("718-7", "135", "g/L", "hemoglobin_g_per_dl", 13.5),
    ("718-7", "13.5", "g/dL", "hemoglobin_g_per_dl", 13.5),
    ("2160-0", "1.0", "mg/dL", "creatinine_umol_per_l", 88.42),
    ("14682-9", "88", "umol/L", "creatinine_umol_per_l", 88.0),
    ("14682-9", "88", "\u00b5mol/L", "creatinine_umol_per_l", 88.0),
    ("1975-2", "1.0", "mg/dL", "bilirubin_umol_per_l", 17.1),
    ("14631-6", "12", "umol/L", "bilirubin_umol_per_l", 12.0),
    ("6301-6", "2.4", "{INR}", "pt_inr", 2.4),
    ("34714-6", "1.1", "", "pt_inr", 1.1),
    ("3173-2", "31", "s", "aptt_s", 31.0),
    ("14979-9", "31", "sec", "aptt_s", 31.0),
    ("6690-2", "9.1", "10*3/uL", "wbc_10e9_per_l", 9.1),
    ("26464-8", "9.1", "10*9/L", "wbc_10e9_per_l", 9.1),
    ("8480-6", "182", "mm[Hg]", "systolic_bp_mmhg", 182.0),
    ("8462-4", "95", "mmHg", "diastolic_bp_mmhg", 95.0),
    ("9269-2", "13", "{score}", "gcs", 13.0),
])
def test_units_are_converted_to_clinical_variables_units(code: str, value: str, unit: str, variable: str,
                                                         expected: float) -> None:
    result = mapped(code, value, unit)
    assert result.variable == variable
    assert result.value_num == pytest.approx(expected)
    assert result.unit == VARIABLES[variable].unit


def test_the_default_loinc_map_covers_the_issue_list() -> None:
    covered = {variable for variable, _ in DEFAULT_LOINC_MAP.values()}
    assert {"systolic_bp_mmhg", "diastolic_bp_mmhg", "pt_inr", "platelets_10e9_per_l", "fibrinogen_g_per_l",
            "aptt_s", "hemoglobin_g_per_dl", "wbc_10e9_per_l", "creatinine_umol_per_l", "bilirubin_umol_per_l",
            "gcs", "onset_time"} <= covered


def test_missing_unit_takes_the_loinc_property_unit() -> None:
    assert mapped("2160-0", "2.0").value_num == pytest.approx(176.84)  # 2160-0 is mass concentration


@pytest.mark.parametrize(("code", "value", "unit", "reason"), [
    ("777-3", "250000", "10*3/uL", "implausible"),  # entered per uL
    ("8480-6", "1200", "mm[Hg]", "implausible"),
    ("6301-6", "0.1", "{INR}", "implausible"),
    ("9269-2", "2", "", "implausible"),
    ("9269-2", "12.5", "", "whole number"),
    ("777-3", "250", "cells", "not accepted"),
    ("3255-7", "350", "mmol/L", "not accepted"),
    ("6301-6", "<0.8", "{INR}", "not a plain number"),
])
def test_implausible_or_unusable_values_are_rejected_with_a_reason(code: str, value: str, unit: str,
                                                                    reason: str) -> None:
    result = map_observation(raw(code, value, unit), {})
    assert isinstance(result, Rejection)
    assert reason in result.reason


def test_structured_numeric_and_result_status() -> None:
    assert mapped("6301-6", "=^1.7", "{INR}", value_type="SN").value_num == 1.7
    assert isinstance(map_observation(raw("6301-6", ">^9", "{INR}", value_type="SN"), {}), Rejection)
    assert isinstance(map_observation(raw("6301-6", "1.2", "{INR}", status="X"), {}), Rejection)
    assert map_observation(raw("1234-5", "1.2", "mg"), {}) is None  # a code the node does not use


def test_local_codes_from_config_and_their_validation() -> None:
    local = {"LAB-INR": "pt_inr", "VS-SYS": "systolic_bp_mmhg"}
    result = map_observation(raw("LAB-INR", "1.9", "", system="L"), local)
    assert isinstance(result, Observation) and result.variable == "pt_inr" and result.value_num == 1.9
    validate_local_code_map(local)
    with pytest.raises(ConfigurationError, match="unknown variables"):
        validate_local_code_map({"X": "inr"})


def test_coded_yes_no_and_onset_time() -> None:
    yes = mapped("HEMEX-ANTICOAG", "Y^Yes^HL70136", value_type="CWE", system="L")
    no = mapped("HEMEX-ANTIPLT", "LA32-8^No^LN", value_type="CWE", system="L")
    assert (yes.variable, yes.value_num) == ("anticoagulant_use", 1.0)
    assert (no.variable, no.value_num) == ("antiplatelet_use", 0.0)
    assert isinstance(map_observation(raw("HEMEX-ANTICOAG", "maybe", value_type="ST", system="L"), {}), Rejection)
    onset = mapped("11368-8", "20240101083000", value_type="DTM")
    assert onset.value_time == datetime(2024, 1, 1, 8, 30) and onset.observed_at == onset.value_time
    future = map_observation(raw("11368-8", "20240102083000", value_type="DTM"), {})
    assert isinstance(future, Rejection) and "implausible" in future.reason


def test_atc_codes_state_anticoagulant_and_antiplatelet_use() -> None:
    def med(code: str) -> Observation | Rejection | None:
        return map_observation(RawObservation((("ATC", code),), "CWE", "Y", "", T, "F", None, "medication"), {})

    for code in ("B01AA03", "B01AE07", "B01AF01"):  # warfarin, dabigatran, rivaroxaban
        result = med(code)
        assert isinstance(result, Observation) and result.variable == "anticoagulant_use"
    aspirin = med("B01AC06")
    assert isinstance(aspirin, Observation) and aspirin.variable == "antiplatelet_use"
    assert med("B01AB01") is None  # heparin: not mapped by default (prophylactic doses)
    assert med("N02BE01") is None


def test_hl7_timestamps_with_offsets_become_local_time() -> None:
    assert parse_hl7_datetime("202401011030") == datetime(2024, 1, 1, 10, 30)
    utc = parse_hl7_datetime("20240101103000+0000")
    assert utc == datetime(2024, 1, 1, 10, 30, tzinfo=timezone.utc).astimezone().replace(tzinfo=None)
    assert parse_hl7_datetime("2024-01-01") is None


def test_medication_message_content_and_cancelled_orders() -> None:
    content = extract_content(check_message(rde("RX1", "B01AF02").encode()))
    assert [o.codes for o in content.observations] == [(("ATC", "B01AF02"),)]
    assert content.observations[0].observed_at == datetime(2024, 1, 1, 9, 0)
    cancelled = extract_content(check_message(rde("RX2", "B01AF02", order_control="CA").encode()))
    assert cancelled.observations == ()


def test_rejections_are_logged_without_phi_over_the_listener(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    running = start_intake(tmp_path)
    caplog.set_level(logging.WARNING, logger="daemon.intake")
    try:
        with MllpClient(running.port) as client:
            ack = client.send(oru("IMPL", [obx(1, "777-3", "250000", "10*3/uL", "20240101100000"),
                                           obx(2, "6301-6", "1.3", "{INR}", "20240101100000")]))
        assert running.processor.wait_idle()
    finally:
        running.listener.stop()
        running.processor.stop()
    assert msa(ack)[1] == "AA"  # the message is fine; one value in it is not
    with running.db.reading() as repos:
        (message_id,) = repos.hl7_messages.with_control_id("IMPL")
        rows = repos.clinical.observations_of_message(message_id)
    assert [r.observation.variable for r in rows] == ["pt_inr"]
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and "platelets_10e9_per_l" in rejected[0] and "implausible" in rejected[0]
    assert "P001" not in rejected[0] and "250000" not in rejected[0] and "Test" not in rejected[0]
