"""The MLLP listener over real sockets on loopback: ACK codes, durability, framing.

Synthetic HL7 messages (made-up patients); a real MLLP client on a free port.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import Hl7Settings
from daemon.intake.message_processor import MessageProcessor
from daemon.intake.mllp_server import MllpListener
from tests.support.databases import open_database
from tests.support.hl7_peers import (
    FS_CR,
    VT,
    Intake,
    MllpClient,
    adt,
    msa,
    msh,
    obx,
    oru,
    pid,
    segment,
    start_intake,
)
from tests.support.peers import wait_until
from tests.support.required_tools import required_tool


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    running = start_intake(tmp_path, max_message_bytes=4000)
    yield running
    running.listener.stop()
    running.processor.stop()


def test_aa_after_the_message_is_on_disk_and_in_the_table(intake: Intake) -> None:
    message = adt("C1")
    with MllpClient(intake.port) as client:
        ack = client.send(message)
        # Durable before the ACK: the row and the file exist as soon as AA arrives.
        rows = intake.messages()
    assert msa(ack)[1:3] == ["AA", "C1"]
    assert segment(ack, "ERR") is None
    assert len(rows) == 1 and rows[0].control_id == "C1" and rows[0].message_type == "ADT^A01"
    stored = rows[0].path
    assert stored.read_bytes() == message.encode()
    assert stored.parent.parent == intake.data_dir / "hl7"


def test_ae_for_a_malformed_message_with_reason_in_msa3_and_err(intake: Intake) -> None:
    broken = msh("C2", "ORU^R01^ORU_R01") + "\r" + pid() + "\rO B X|1|NM|x\r"
    with MllpClient(intake.port) as client:
        ack = client.send(broken)
    fields = msa(ack)
    assert fields[1:3] == ["AE", "C2"]
    assert "unparseable" in fields[3]
    err = segment(ack, "ERR")
    assert err is not None and "HL70357" in err and err.endswith("|E")
    assert intake.messages() == []


def test_ae_when_required_fields_or_segments_are_missing(intake: Intake) -> None:
    with MllpClient(intake.port) as client:
        no_pid = client.send(msh("C3", "ORU^R01^ORU_R01") + "\rOBR|1\r")
        no_control_id = client.send(msh("", "ADT^A01") + "\r" + pid() + "\r")
        not_hl7 = client.send("hello world")
    assert msa(no_pid)[1] == "AE" and "PID" in msa(no_pid)[3]
    assert msa(no_control_id)[1] == "AE" and "MSH-10" in msa(no_control_id)[3]
    assert msa(not_hl7)[1] == "AE" and "MSH" in msa(not_hl7)[3]


def test_ar_for_unsupported_message_type_and_version(intake: Intake) -> None:
    with MllpClient(intake.port) as client:
        wrong_type = client.send(msh("C4", "SIU^S12") + "\r" + pid() + "\r")
        wrong_event = client.send(msh("C5", "ADT^A03") + "\r" + pid() + "\r")
        wrong_version = client.send(msh("C6", "ADT^A01", version="3.0") + "\r" + pid() + "\r")
    assert msa(wrong_type)[1:3] == ["AR", "C4"] and r"SIU\S\S12" in msa(wrong_type)[3]  # ^ escaped
    assert msa(wrong_event)[1] == "AR"
    assert msa(wrong_version)[1] == "AR" and "version" in msa(wrong_version)[3]
    assert intake.messages() == []


def test_duplicate_control_ids_are_acknowledged_and_stored_once(intake: Intake) -> None:
    with MllpClient(intake.port) as first, MllpClient(intake.port) as second:
        acks = [first.send(adt("DUP")), second.send(adt("DUP")), first.send(adt("DUP"))]
    assert [msa(a)[1] for a in acks] == ["AA", "AA", "AA"]
    assert len(intake.messages()) == 1
    assert len(list((intake.data_dir / "hl7").rglob("*.hl7"))) == 1


def test_many_messages_on_one_connection(intake: Intake) -> None:
    with MllpClient(intake.port) as client:
        acks = [client.send(adt(f"M{i}")) for i in range(25)]
    assert [msa(a)[2] for a in acks] == [f"M{i}" for i in range(25)]
    assert all(msa(a)[1] == "AA" for a in acks)
    assert len(intake.messages()) == 25
    assert intake.processor.wait_idle()
    assert all(r.processed_at is not None and r.process_error is None for r in intake.messages())


def test_a_frame_split_over_several_writes_is_reassembled(intake: Intake) -> None:
    data = VT + adt("P1").encode() + FS_CR
    with MllpClient(intake.port) as client:
        client.send_raw(data[:10])
        client.send_raw(data[10:40])
        assert not client.has_pending_data(0.3), "ACK before the frame was complete"
        client.send_raw(data[40:])
        ack = client.read_ack()
    assert msa(ack)[1:3] == ["AA", "P1"]


def test_abandoned_partial_frame_does_not_cost_the_next_message(intake: Intake) -> None:
    with MllpClient(intake.port) as client:
        client.send_raw(VT + adt("LOST").encode()[:50])  # sender gave up mid-frame
        ack = client.send(adt("KEPT"))
        junk_then_ok = (b"garbage without framing" + FS_CR)
        client.send_raw(junk_then_ok)
        after_junk = client.send(adt("AFTER"))
    assert msa(ack)[1:3] == ["AA", "KEPT"]
    assert msa(after_junk)[1:3] == ["AA", "AFTER"]
    assert [r.control_id for r in intake.messages()] == ["KEPT", "AFTER"]


def test_message_without_start_block_gets_ae_and_connection_survives(intake: Intake) -> None:
    with MllpClient(intake.port) as client:
        client.send_raw(adt("NOVT").encode() + FS_CR)
        unframed = client.read_ack()
        ok = client.send(adt("OK1"))
    assert msa(unframed)[1:3] == ["AE", "NOVT"] and "framing" in msa(unframed)[3]
    assert msa(ok)[1] == "AA"


def test_oversized_message_is_refused_and_the_next_one_accepted(intake: Intake) -> None:
    big = oru("BIG", [obx(i, "8480-6", "120", "mm[Hg]") for i in range(1, 200)])
    assert len(big) > 4000
    with MllpClient(intake.port) as client:
        too_big = client.send(big)
        after = client.send(adt("SMALL"))
    assert msa(too_big)[1:3] == ["AE", "BIG"] and "4000 byte limit" in msa(too_big)[3]
    assert msa(after)[1:3] == ["AA", "SMALL"]
    assert [r.control_id for r in intake.messages()] == ["SMALL"]


def test_wrong_encoding_is_ae_and_declared_latin1_is_accepted(intake: Intake) -> None:
    latin1_name = adt("ENC1").replace("Test^Patient", "Test^Ren\u00e9e").encode("latin-1")
    declared = (adt("ENC2").replace("Test^Patient", "Test^Ren\u00e9e")
                .replace("|2.5.1", "|2.5.1||||||8859/1", 1).encode("latin-1"))
    with MllpClient(intake.port) as client:
        undeclared = client.send(latin1_name)  # no MSH-18: must be UTF-8, is not
        accepted = client.send(declared)
        unknown_charset = client.send(adt("ENC3").replace("|2.5.1", "|2.5.1||||||KLINGON", 1))
    assert msa(undeclared)[1:3] == ["AE", "ENC1"] and "not valid" in msa(undeclared)[3]
    assert msa(accepted)[1:3] == ["AA", "ENC2"]
    assert msa(unknown_charset)[1] == "AR"


def test_storage_full_is_ae(tmp_path: Path) -> None:
    running = start_intake(tmp_path, min_free_disk_mb=10**9)  # more free space than any disk has
    try:
        with MllpClient(running.port) as client:
            ack = client.send(adt("FULL"))
            second = client.send(adt("FULL2"))
    finally:
        running.listener.stop()
        running.processor.stop()
    assert msa(ack)[1:3] == ["AE", "FULL"] and "not stored" in msa(ack)[3]
    assert msa(second)[1:3] == ["AE", "FULL2"]
    assert running.messages() == []


def test_messages_stored_but_not_applied_are_applied_at_next_start(tmp_path: Path) -> None:
    settings = Hl7Settings(host="127.0.0.1", port=0, min_free_disk_mb=0)
    db = open_database(tmp_path / "hemex.sqlite3")
    listener = MllpListener(settings, db, tmp_path)  # no processor: nothing applied
    listener.start()
    with MllpClient(listener.port) as client:
        client.send(oru("R1", [obx(1, "6301-6", "1.4", "{INR}", "20240101100000")]))
    listener.stop()
    with db.reading() as repos:
        (message_id,) = repos.hl7_messages.with_control_id("R1")
        assert repos.clinical.observations_of_message(message_id) == []
    processor = MessageProcessor(db, {})
    assert processor.start() == 1
    assert processor.wait_idle()
    processor.stop()
    with db.reading() as repos:
        rows = repos.clinical.observations_of_message(message_id)
    assert [(r.observation.variable, r.observation.value_num) for r in rows] == [("pt_inr", 1.4)]


def _make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost and a client certificate (openssl CLI)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=hemex-test-ca")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={'localhost' if name == 'server' else 'lab-client'}")
        (folder / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_mutual_tls_accepts_a_client_certificate_and_refuses_none(tmp_path: Path) -> None:
    required_tool("openssl", "Debian's openssl package")
    certs = _make_certs(tmp_path)
    running = start_intake(tmp_path / "data", tls_cert=certs["server.pem"], tls_key=certs["server.key"],
                           tls_client_ca=certs["ca.pem"])
    try:
        with_cert = ssl.create_default_context(cafile=str(certs["ca.pem"]))
        with_cert.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
        with MllpClient(running.port, ssl_context=with_cert) as client:
            ack = client.send(adt("TLS1"))
        without_cert = ssl.create_default_context(cafile=str(certs["ca.pem"]))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)), \
                MllpClient(running.port, ssl_context=without_cert) as client:
            client.send(adt("TLS2"))
    finally:
        running.listener.stop()
        running.processor.stop()
    assert msa(ack)[1:3] == ["AA", "TLS1"]
    assert [r.control_id for r in running.messages()] == ["TLS1"]


def test_oversized_message_arriving_in_pieces_is_skipped_to_its_end(intake: Intake) -> None:
    big = (VT + oru("BIG2", [obx(i, "8480-6", "120", "mm[Hg]") for i in range(1, 300)]).encode() + FS_CR)
    with MllpClient(intake.port) as client:
        client.send_raw(big[:6000])  # over the limit with no end block yet
        assert not client.has_pending_data(0.3)
        client.send_raw(big[6000:])
        too_big = client.read_ack()
        after = client.send(adt("NEXT"))
    assert msa(too_big)[1:3] == ["AE", "BIG2"]
    assert msa(after)[1:3] == ["AA", "NEXT"]


def test_errors_in_pre_2_5_versions_go_in_err1(intake: Intake) -> None:
    broken = msh("OLD1", "ORU^R01", version="2.3") + "\rPID|1||P1\rO B X|1\r"
    with MllpClient(intake.port) as client:
        ack = client.send(broken)
    err = segment(ack, "ERR")
    assert msa(ack)[1] == "AE" and err is not None and err.startswith("ERR|^^^102&")


def test_parser_messages_stay_out_of_the_log(intake: Intake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="daemon.intake")
    broken = msh("LOG1", "ORU^R01^ORU_R01") + "\r" + pid("SECRET-ID") + "\rS ECRET|1\r"
    with MllpClient(intake.port) as client:
        ack = client.send(broken)
    # The sender gets the parser's words, which quote its message; the node's log does not.
    assert msa(ack)[1] == "AE" and "Invalid name for Segment: S E" in msa(ack)[3]
    wait_until(lambda: any("ack=AE" in r.getMessage() for r in caplog.records), timeout_s=5)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "unparseable" in logged and "Segment: S E" not in logged and "SECRET" not in logged
