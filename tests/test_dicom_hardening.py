"""The DICOM listener attacked over loopback: lock-out, slow peers, oversized PDUs and
objects, deep nesting, a CT without pixels, a wrong called AE title.

Real clients: raw sockets from 127.0.0.2 (another peer address than the scanner's
127.0.0.1), dcmtk's storescu and echoscu (with +tls), pynetdicom. Images are synthetic
tiny CT slices (tests/support/dicom_listener.tiny_ct). Timeouts are set to a second or
two in these tests so each attack resolves in seconds.
"""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.support.attackers import (
    ATTACKER_HOST,
    closed_by_peer,
    connect_from,
    deeply_nested_dataset,
    idle_connections,
    pdu_header,
)
from tests.support.dicom_listener import (
    Listener,
    send,
    send_raw,
    start_receive_listener,
    still_serving,
    storescu,
    tiny_ct,
)
from tests.support.pki import Pki, make_pki
from tests.support.required_tools import required_tool

SCP_LOGGER = "daemon.receive"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = start_receive_listener(tmp_path, acse_timeout_s=1.0, network_timeout_s=2.0)
    yield running
    running.stop()


def _audit(listener: Listener) -> list[dict]:
    path = listener.audit.path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(SCP_LOGGER)]


def _ct(tmp_path: Path) -> Path:
    return tiny_ct(tmp_path / f"in/{generate_uid()}.dcm", generate_uid(), generate_uid(), 0)


# --- lock-out ---------------------------------------------------------------------------

@pytest.mark.database_neutral
def test_idle_sockets_of_one_peer_do_not_lock_the_scanner_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """40 silent connections from 127.0.0.2 (the probes held every slot with 16-20): the
    peer keeps ``max_associations_per_peer`` of them, storescu from 127.0.0.1 gets in.
    Default timeouts: the silent connections stay for the whole test."""
    required_tool("storescu", "Debian's dcmtk package")
    running = start_receive_listener(tmp_path)
    try:
        _scanner_gets_in_past_idle_sockets(tmp_path, running, caplog)
    finally:
        running.stop()


def _scanner_gets_in_past_idle_sockets(tmp_path: Path, listener: Listener, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=SCP_LOGGER), idle_connections(listener.port, 40) as held:
        refused = [sock for sock in held if closed_by_peer(sock, within_s=0.05)]
        result = storescu(listener.port, [_ct(tmp_path)], "STORESCU", "-to", "5", "-ta", "5")
    assert result.returncode == 0, result.stderr
    assert listener.count() == 1
    assert len(refused) >= 40 - 8  # the default budget of one peer is 8 connections
    assert any("dicom.max_associations_per_peer" in line and ATTACKER_HOST in line for line in _log_lines(caplog))
    assert any(r["action"] == "association-refused" and r["peer"].startswith(ATTACKER_HOST) for r in _audit(listener))


def test_a_peer_that_sends_part_of_a_request_and_stops_is_closed(listener: Listener) -> None:
    """3 bytes of an A-ASSOCIATE-RQ header, then silence: closed after acse_timeout_s (1 s)."""
    with connect_from(listener.port) as sock:
        sock.sendall(pdu_header(0x01, 200)[:3])
        assert closed_by_peer(sock, within_s=5.0)


def test_a_peer_that_trickles_its_request_is_closed(listener: Listener) -> None:
    """One byte of the A-ASSOCIATE-RQ every 0.4 s never completes it within acse_timeout_s."""
    with connect_from(listener.port) as sock:
        request = pdu_header(0x01, 68) + bytes(68)
        started = time.monotonic()
        closed = False
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if closed_by_peer(sock, within_s=0.4):
                closed = True
                break
        assert closed and time.monotonic() - started < 4.0


def test_a_pdu_longer_than_the_maximum_is_refused_before_it_is_read(listener: Listener) -> None:
    """A header announcing a 1 GiB A-ASSOCIATE-RQ: closed at once, nothing allocated."""
    with connect_from(listener.port) as sock:
        sock.sendall(pdu_header(0x01, 1 << 30) + bytes(1000))
        assert closed_by_peer(sock, within_s=2.0)


def test_a_p_data_pdu_over_the_negotiated_maximum_aborts_the_association(
    tmp_path: Path, listener: Listener, caplog: pytest.LogCaptureFixture,
) -> None:
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="HEMEX")
    assert assoc.is_established
    maximum = assoc.acceptor.maximum_length
    assert 0 < maximum <= 1024 * 1024  # the listener announces a finite maximum
    raw = assoc.dul.socket.socket
    with caplog.at_level(logging.WARNING, logger=SCP_LOGGER):
        raw.sendall(pdu_header(0x04, maximum + 4096) + bytes(4096))
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not assoc.is_established
    assert any("dicom.maximum_pdu_size" in line for line in _log_lines(caplog))
    still_serving(listener, tmp_path)


def test_called_ae_title_must_be_the_listeners(
    tmp_path: Path, listener: Listener, caplog: pytest.LogCaptureFixture,
) -> None:
    """The probes stored images with ``-aec WRONG``. A scanner set up for another node
    now gets 0x0124 for each image (C-ECHO still answers, as for any AE title)."""
    required_tool("storescu", "Debian's dcmtk package")
    path = _ct(tmp_path)
    with caplog.at_level(logging.INFO, logger=SCP_LOGGER):
        result = subprocess.run(["storescu", "-v", "-aet", "STORESCU", "-aec", "WRONG", "-to", "5",
                                 "127.0.0.1", str(listener.port), str(path)],
                                capture_output=True, text=True, timeout=60, check=False)
    assert "Store Response (Unknown Status: 0x124)" in result.stderr, result.stderr
    assert listener.count() == 0
    assert any("dicom.require_called_ae_title" in line and "status=0x0124" in line for line in _log_lines(caplog))
    refused = [r for r in _audit(listener) if r["action"] == "dicom-store-refused"]
    assert refused and refused[0]["called_ae"] == "WRONG" and "require_called_ae_title" in refused[0]["reason"]


# --- TLS ------------------------------------------------------------------------------

@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    required_tool("openssl", "Debian's openssl package")
    return make_pki(tmp_path / "pki")


def _echoscu_tls(port: int, pki: Pki) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["echoscu", "-aet", "STORESCU", "-aec", "HEMEX", "-to", "5", "-ta", "5", "-td", "5",
         "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert),
         "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=30, check=False)


def test_a_silent_tcp_connection_does_not_freeze_tls_associations(tmp_path: Path, pki: Pki) -> None:
    """The probes froze every TLS association behind one silent connection (the handshake
    ran in the accept thread): now echoscu +tls answers at once, and the silent
    connection is closed after tls_handshake_timeout_s."""
    required_tool("echoscu", "Debian's dcmtk package")
    running = start_receive_listener(tmp_path, tls_cert=pki.server_cert, tls_key=pki.server_key,
                                     tls_client_ca=pki.ca_cert, tls_handshake_timeout_s=1.0)
    try:
        with connect_from(running.port) as silent:
            started = time.monotonic()
            result = _echoscu_tls(running.port, pki)
            assert result.returncode == 0, result.stderr
            assert time.monotonic() - started < 4.0
            assert closed_by_peer(silent, within_s=3.0)
    finally:
        running.stop()


def test_a_tls_peer_without_certificate_is_refused_and_the_listener_serves_on(tmp_path: Path, pki: Pki) -> None:
    required_tool("echoscu", "Debian's dcmtk package")
    running = start_receive_listener(tmp_path, tls_cert=pki.server_cert, tls_key=pki.server_key,
                                     tls_client_ca=pki.ca_cert, tls_handshake_timeout_s=1.0)
    try:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        with connect_from(running.port) as raw, pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            context.wrap_socket(raw, server_hostname="localhost").recv(10)
        assert _echoscu_tls(running.port, pki).returncode == 0
    finally:
        running.stop()


# --- hostile objects --------------------------------------------------------------------

def test_object_over_max_instance_bytes_is_aborted_without_being_held_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The association is aborted as soon as the data set passes max_instance_bytes (64 KiB
    here): nothing is spooled, and the rest of the object is never read (bench/
    bench_receive_memory.py measures the memory)."""
    running = start_receive_listener(tmp_path, max_instance_bytes=64 * 1024)
    try:
        ds = pydicom.dcmread(_ct(tmp_path))
        ds.Rows = ds.Columns = 512  # 512 KiB of pixels
        ds.PixelData = b"\x00\x04" * (512 * 512)
        with caplog.at_level(logging.WARNING, logger=SCP_LOGGER):
            status = send(running.port, ds)
        assert status is None  # no response: the association was aborted
        assert any("dicom.max_instance_bytes" in line for line in _log_lines(caplog))
        assert running.count() == 0 and not list(running.spool.rglob("*.dcm"))
        assert any(r["action"] == "association-aborted" and "max_instance_bytes" in r["reason"]
                   for r in _audit(running))
        still_serving(running, tmp_path)
    finally:
        running.stop()


def _identifying_elements() -> bytes:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.Modality = "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    return bytes(encode(ds, False, True))


def test_sequences_nested_500_deep_cannot_be_understood(
    tmp_path: Path, listener: Listener, caplog: pytest.LogCaptureFixture,
) -> None:
    """The probes got 0xC211 and a RecursionError traceback; the answer is 0xC000 with a reason."""
    body = deeply_nested_dataset(500, _identifying_elements())
    with caplog.at_level(logging.WARNING, logger=SCP_LOGGER):
        assert send_raw(listener.port, body, tmp_path) == 0xC000
    assert any("nested" in line and line.endswith("status=0xC000") for line in _log_lines(caplog))
    assert listener.count() == 0
    still_serving(listener, tmp_path)


def test_ct_without_pixel_data_does_not_match_its_sop_class(
    tmp_path: Path, listener: Listener, caplog: pytest.LogCaptureFixture,
) -> None:
    """Pixel Data is type 1 in the CT Image IOD: the data set is understood but is not
    the CT image it was sent as, which PS3.4 B.2.3 answers with 0xA900."""
    ds = pydicom.dcmread(_ct(tmp_path))
    del ds.PixelData
    with caplog.at_level(logging.WARNING, logger=SCP_LOGGER):
        assert send(listener.port, ds) == 0xA900
    assert any("no Pixel Data" in line for line in _log_lines(caplog))
    assert listener.count() == 0
    still_serving(listener, tmp_path)


# --- the byte guard's phase timers, on a stream with an injected clock --------------------

def test_a_dimse_message_must_be_whole_within_dimse_timeout() -> None:
    """No network test waits out a DIMSE timeout: the guard is pure, its clock is given."""
    from daemon.receive.pdu_guard import PduLimits, PduStreamGuard
    from tests.support.fuzz_targets import association_request, p_data

    limits = PduLimits(max_pdu_bytes=4096, max_instance_bytes=1 << 20, acse_timeout_s=10.0,
                       dimse_timeout_s=60.0, network_timeout_s=30.0)
    guard = PduStreamGuard(limits, connected_at=0.0)
    assert guard.feed(association_request(), now=1.0) is None
    assert guard.calling_ae == "STORESCU" and guard.called_ae == "HEMEX"
    # A C-ECHO: its command is whole; a long silence after it is no DIMSE timeout.
    assert guard.feed(p_data([(0x03, bytes(60))]), now=2.0) is None
    assert guard.deadline() is None
    # A C-STORE whose data set trickles in: one fragment every 25 s.
    assert guard.feed(p_data([(0x03, bytes(60))]), now=500.0) is None
    assert guard.feed(p_data([(0x00, bytes(1000))]), now=525.0) is None
    assert guard.feed(p_data([(0x00, bytes(1000))]), now=550.0) is None
    violation = guard.feed(p_data([(0x02, bytes(1000))]), now=575.0)
    assert violation is not None and violation.setting == "dicom.dimse_timeout_s"


def test_the_association_request_must_be_whole_within_acse_timeout() -> None:
    from daemon.receive.pdu_guard import PduLimits, PduStreamGuard
    from tests.support.fuzz_targets import association_request

    limits = PduLimits(max_pdu_bytes=4096, max_instance_bytes=4096, acse_timeout_s=10.0,
                       dimse_timeout_s=60.0, network_timeout_s=30.0)
    guard = PduStreamGuard(limits, connected_at=0.0)
    request = association_request()
    assert guard.feed(request[:50], now=9.0) is None
    assert guard.deadline() == 10.0
    violation = guard.feed(request[50:], now=10.5)
    assert violation is not None and violation.setting == "dicom.acse_timeout_s"
