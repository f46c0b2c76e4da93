"""The MLLP listener attacked over loopback: senders it does not know, too many
connections, frames that never end.

Real clients: python-hl7's MLLPClient, the tests' MLLP client bound to another loopback
address (127.0.0.2 is another peer than 127.0.0.1) and raw sockets. Messages are
synthetic (tests/support/hl7_peers.py). Timeouts are a second in these tests.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import hl7.client
import pytest

from tests.support.attackers import ATTACKER_HOST, closed_by_peer, connect_from
from tests.support.hl7_peers import (
    FS_CR,
    VT,
    Intake,
    MllpClient,
    adt,
    merge,
    msa,
    obx,
    oru,
    start_intake,
)
from tests.support.pki import Pki, make_pki
from tests.support.required_tools import required_tool

LOGGER = "daemon.intake"
INR_FROM_EVIL = oru("EVIL-1", [obx(1, "6301-6", "9.9", "{INR}", "20240101093000")], patient_id="P001")


def _stop(intake: Intake) -> None:
    intake.listener.stop()
    intake.processor.stop()


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    running = start_intake(tmp_path / "data", frame_timeout_s=1.0)
    yield running
    _stop(running)


def _audit(intake: Intake) -> list[dict]:
    path = intake.data_dir / "logs" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]


def test_a_peer_address_not_allowed_is_refused_by_default(intake: Intake, caplog: pytest.LogCaptureFixture) -> None:
    """The probes set INR 9.9 for a real patient from an unknown host and got AA. The
    default ``hl7.allowed_peers`` is the loopback interface only."""
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with connect_from(intake.port) as sock:
            sock.sendall(VT + INR_FROM_EVIL.encode() + FS_CR)
            assert closed_by_peer(sock, within_s=2.0)
        with MllpClient(intake.port) as local:  # 127.0.0.1 is allowed
            assert msa(local.send(adt("LOCAL-1")))[1] == "AA"
    assert [m.control_id for m in intake.messages()] == ["LOCAL-1"]
    assert any("hl7.allowed_peers" in line and ATTACKER_HOST in line for line in _log_lines(caplog))
    refused = [r for r in _audit(intake) if r["action"] == "hl7-connection-refused"]
    assert refused and refused[0]["peer"].startswith(ATTACKER_HOST)


def test_a_sending_application_not_allowed_gets_ar_and_nothing_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    running = start_intake(tmp_path / "data", allowed_senders=["LAB"])
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER), \
                hl7.client.MLLPClient("127.0.0.1", running.port) as evil:
            evil.socket.settimeout(10)
            ack = evil.send_message(INR_FROM_EVIL.replace("|LAB|HOSP|", "|EVIL|HOSP|", 1)).decode()
            merged = evil.send_message(merge("EVIL-2", "P002", "P001").replace("|LAB|HOSP|", "|EVIL|HOSP|", 1))
            good = evil.send_message(adt("LAB-1")).decode()  # the same connection, an allowed sender
        assert msa(ack)[1] == "AR" and "hl7.allowed_senders" in ack
        assert msa(merged.decode())[1] == "AR"
        assert msa(good)[1] == "AA"
        assert [m.control_id for m in running.messages()] == ["LAB-1"]
        assert any("hl7.allowed_senders" in line for line in _log_lines(caplog))
        refused = [r for r in _audit(running) if r["action"] == "hl7-received" and r["ack"] == "AR"]
        assert {r["control_id"] for r in refused} == {"EVIL-1", "EVIL-2"}
        assert all("EVIL" in r["sender"] for r in refused)
    finally:
        _stop(running)


def test_a_client_certificate_on_the_allow_list_admits_any_address(tmp_path: Path) -> None:
    required_tool("openssl", "Debian's openssl package")
    pki: Pki = make_pki(tmp_path / "pki")
    other_cert, other_key = pki.client("someone-else")
    running = start_intake(tmp_path / "data", tls_cert=pki.server_cert, tls_key=pki.server_key,
                           tls_client_ca=pki.ca_cert, allowed_client_certificates=["lab-client"])
    try:
        def context(cert: Path, key: Path) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
            ctx.load_cert_chain(str(cert), str(key))
            return ctx

        with MllpClient(running.port, ssl_context=context(pki.client_cert, pki.client_key),
                        source=ATTACKER_HOST) as lab:
            assert msa(lab.send(adt("CERT-1")))[1] == "AA"
        with pytest.raises((ConnectionError, OSError)), \
                MllpClient(running.port, ssl_context=context(other_cert, other_key), source=ATTACKER_HOST) as other:
            other.send(adt("CERT-2"))
        assert [m.control_id for m in running.messages()] == ["CERT-1"]
    finally:
        _stop(running)


def test_connections_over_the_per_peer_budget_are_closed_and_others_still_served(tmp_path: Path) -> None:
    running = start_intake(tmp_path / "data", allowed_peers=["127.0.0.0/8"], max_connections_per_peer=2)
    held: list[socket.socket] = []
    try:
        held = [connect_from(running.port) for _ in range(2)]
        with connect_from(running.port) as third:
            assert closed_by_peer(third, within_s=2.0)
        assert not closed_by_peer(held[0], within_s=0.2)
        with MllpClient(running.port) as other_peer:
            assert msa(other_peer.send(adt("OTHER-1")))[1] == "AA"
    finally:
        for sock in held:
            sock.close()
        _stop(running)


def test_an_unterminated_frame_is_dropped_after_frame_timeout(intake: Intake) -> None:
    """A frame that starts and never ends holds its connection (and up to a frame's
    buffer) for ``frame_timeout_s`` (1 s here), not for the 300 s idle timeout."""
    with MllpClient(intake.port) as client:
        client.send_raw(VT + b"MSH|^~\\&|LAB|HOSP|HEMEX|HOSP|2024" + b"X" * 100_000)
        assert closed_by_peer(client.sock, within_s=4.0)
    with MllpClient(intake.port) as client:
        assert msa(client.send(adt("AFTER-1")))[1] == "AA"
