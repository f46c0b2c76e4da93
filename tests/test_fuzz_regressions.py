"""Inputs bench/fuzz_parsers.py found, kept as regressions, plus a short fuzz run for CI.

The cases are mutated synthetic tiny CT files (tests/fuzz_cases/). Before the fix in
daemon/receive/storage_scp.py each raised an exception type the C-STORE handler did not
convert, so the scanner got pynetdicom's generic 0xC211 instead of 0xC000 with a reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from bench.fuzz_parsers import mutated
from tests.support.fuzz_targets import (
    DICOM_EXPECTED,
    HL7_EXPECTED,
    dicom_header_target,
    dicom_seed,
    hl7_seeds,
    hl7_target,
)
from tests.support.hl7_peers import MllpClient, adt, msa, start_intake
from tests.test_dicom_listener import Listener, _start
from tests.test_hostile_dicom import _send_raw, _still_serving

CASES = sorted(Path(__file__).with_name("fuzz_cases").glob("dicom-*.bin"))
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running, server = _start(tmp_path)
    yield running
    server.shutdown()  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_found_dicom_case_raises_only_converted_errors(case: Path) -> None:
    with pytest.raises(DICOM_EXPECTED):
        dicom_header_target(case.read_bytes())


def test_unknown_vr_over_the_wire_is_cannot_understand(listener: Listener, tmp_path: Path) -> None:
    raw = (Path(__file__).with_name("fuzz_cases") / "dicom-unknown-vr-sop-uid.bin").read_bytes()
    body = raw[raw.find(b"\x08\x00\x16\x00"):]
    assert _send_raw(listener.port, body) == 0xC000
    assert listener.db.query("SELECT COUNT(*) FROM instances")[0][0] == 0
    _still_serving(listener, tmp_path)


_SEED: list[bytes] = []


def _dicom_seed() -> list[bytes]:
    if not _SEED:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            _SEED.append(dicom_seed(Path(tmp)))
    return _SEED


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(mutated(_dicom_seed()))
def test_dicom_header_path_short_fuzz(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dicom_header_target(data)
        except DICOM_EXPECTED:
            pass


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(mutated(hl7_seeds()))
def test_hl7_parser_short_fuzz(data: bytes) -> None:
    try:
        hl7_target(data)
    except HL7_EXPECTED:
        pass


@pytest.mark.parametrize("case", sorted(Path(__file__).with_name("fuzz_cases").glob("hl7-*.bin")),
                         ids=lambda p: p.stem)
def test_found_hl7_case_is_rejected(case: Path) -> None:
    with pytest.raises(HL7_EXPECTED):
        hl7_target(case.read_bytes())


def test_found_hl7_case_gets_an_ae_ack_and_the_connection_goes_on(tmp_path: Path) -> None:
    """Before the fix the IndexError escaped the store thread and the connection dropped."""
    intake = start_intake(tmp_path)
    try:
        with MllpClient(intake.port) as client:
            bad = (Path(__file__).with_name("fuzz_cases") / "hl7-msh-then-newline.bin").read_bytes()
            assert msa(client.send(bad))[1] == "AE"
            assert msa(client.send(adt("AFTER-BAD")))[1] == "AA"
    finally:
        intake.listener.stop()
        intake.processor.stop()
