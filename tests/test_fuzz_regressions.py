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

from tests.support.databases import on_postgresql
from tests.support.dicom_listener import Listener, send_raw, start_receive_listener, still_serving
from tests.support.fuzz_targets import (
    DICOM_STATUSES,
    HL7_EXPECTED,
    DicomTarget,
    PduGuardTarget,
    association_seeds,
    client_hello,
    dataset_bytes_of,
    dicom_seed,
    echo_succeeds,
    hl7_seeds,
    hl7_target,
    mutated,
    send_hostile_stream,
)
from tests.support.hl7_peers import MllpClient, adt, msa, start_intake
from tests.support.peers import wait_until

CASES = sorted(Path(__file__).with_name("fuzz_cases").glob("dicom-*.bin"))
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = start_receive_listener(tmp_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def dicom_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomTarget]:
    # Module-wide, so it gets its own PostgreSQL database on that pass (the per-test one
    # does not exist yet when a module fixture starts).
    url = request.getfixturevalue("postgres_server").create_database() if on_postgresql() else None
    target = DicomTarget(tmp_path_factory.mktemp("fuzz"), database_url=url)
    yield target
    target.close()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_found_dicom_case_cannot_be_understood(case: Path, dicom_target: DicomTarget) -> None:
    """Each case is a damaged file the fuzzer found; the handler answers 0xC000."""
    assert dicom_target(dataset_bytes_of(case)) == 0xC000


def test_unknown_vr_over_the_wire_is_cannot_understand(listener: Listener, tmp_path: Path) -> None:
    raw = (Path(__file__).with_name("fuzz_cases") / "dicom-unknown-vr-sop-uid.bin").read_bytes()
    body = raw[raw.find(b"\x08\x00\x16\x00"):]
    assert send_raw(listener.port, body, tmp_path) == 0xC000
    assert listener.count() == 0
    still_serving(listener, tmp_path)


_SEED: list[bytes] = []


def _dicom_seed() -> list[bytes]:
    if not _SEED:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            _SEED.append(dicom_seed(Path(tmp)))
    return _SEED


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=mutated(_dicom_seed()))
def test_c_store_handler_short_fuzz(dicom_target: DicomTarget, data: bytes) -> None:
    """Whatever bytes arrive, the handler answers a C-STORE status and raises nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dicom_target(data) in DICOM_STATUSES


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


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(mutated(association_seeds()))
def test_association_byte_guard_short_fuzz(data: bytes) -> None:
    """Whatever a peer sends, the guard gives a verdict or nothing, and never raises."""
    PduGuardTarget()(data)


@pytest.mark.database_neutral
def test_hostile_association_and_tls_streams_leave_the_listener_serving(tmp_path: Path) -> None:
    """A few of bench/fuzz_parsers.py's association and TLS streams: each association ends
    within its timeouts and a good C-ECHO follows (the full run is the bench)."""
    import random
    import ssl

    from tests.support.pki import make_pki
    from tests.support.required_tools import required_tool

    required_tool("openssl", "Debian's openssl package")
    pki = make_pki(tmp_path / "pki")
    client = ssl.create_default_context(cafile=str(pki.ca_cert))
    rng = random.Random(3)
    seeds = association_seeds()
    for tls in (None, client):
        options: dict[str, object] = {"acse_timeout_s": 1.0, "network_timeout_s": 1.0, "max_instance_bytes": 4096}
        if tls is not None:
            options.update(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_handshake_timeout_s=1.0)
        running = start_receive_listener(tmp_path / ("tls" if tls else "plain"), **options)
        try:
            streams = [seeds[0][:40], seeds[1] + rng.randbytes(200), bytes(seeds[2][:7]) + b"\xff" * 20]
            if tls is not None:
                hello = client_hello()
                send_hostile_stream(running.port, hello[:60] + rng.randbytes(100), None, wait_s=3)
            for stream in streams:
                send_hostile_stream(running.port, stream, tls, wait_s=3)
            server = running.server
            wait_until(lambda: not server.active_associations, timeout_s=6.0, interval_s=0.05)  # noqa: B023
            assert echo_succeeds(running.port, tls)
        finally:
            running.stop()
