"""Bounded-time fuzzing of the DICOM header path, the association and TLS layers, the
HL7 parser and MLLP framing.

Hypothesis generates mutations of valid synthetic seeds (byte flips, truncation,
insertions) and plain random bytes. A failure is an exception a boundary does not
convert (tests/support/fuzz_targets.py), or a listener that stops answering a good
request after a hostile byte stream:

- dicom: the C-STORE handler on a data set's bytes (a status, never an exception);
- pdu: the association layer's byte-stream guard on request/P-DATA streams cut at
  random points (a verdict or nothing, never an exception);
- association: mutated A-ASSOCIATE-RQ/P-DATA/release streams at a real listener, then a
  good C-ECHO must succeed;
- tls: mutated ClientHello records and random bytes at a TLS listener, and mutated
  association streams inside real TLS sessions, then a good C-ECHO over TLS must succeed;
- hl7 and mllp: the HL7 parser, and hostile byte streams at a real MLLP listener.

Crashing inputs are written to bench/fuzz_found/ to be kept as regression tests.

Usage: .venv/bin/python -m bench.fuzz_parsers [--seconds 60] [--mllp-streams 200]
           [--association-streams 200]
"""

from __future__ import annotations

import argparse
import logging
import random
import socket
import ssl
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.dicom_listener import start_receive_listener
from tests.support.fuzz_targets import (
    DICOM_STATUSES,
    HL7_EXPECTED,
    DicomTarget,
    PduGuardTarget,
    association_seeds,
    client_hello,
    dicom_seed,
    echo_succeeds,
    hl7_seeds,
    hl7_target,
    mutated,
    send_hostile_stream,
)
from tests.support.hl7_peers import MllpClient, adt, msa, start_intake

FOUND = Path(__file__).with_name("fuzz_found")


def fuzz(name: str, target: Callable[[bytes], object], expected: tuple[type[BaseException], ...],
         strategy: st.SearchStrategy[bytes], seconds: float,
         accept: Callable[[object], bool] = lambda _: True) -> tuple[int, list[bytes]]:
    """Run ``target`` on generated inputs for about ``seconds``; (cases, failing inputs).

    An input fails when ``target`` raises anything but ``expected`` or returns something
    ``accept`` refuses (for the C-STORE handler: a status it must not answer).
    """
    cases, crashes = 0, []
    deadline = time.monotonic() + seconds

    @settings(max_examples=500, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(data: bytes) -> None:
        nonlocal cases
        if time.monotonic() > deadline:
            return
        cases += 1
        try:
            outcome = target(data)
        except expected:
            return
        except Exception:  # noqa: BLE001 - the point of a fuzzer: record every unexpected type
            problem = traceback.format_exc(limit=3).splitlines()[-1]
        else:
            if accept(outcome):
                return
            problem = f"answered {outcome!r}"
        crashes.append(data)
        FOUND.mkdir(exist_ok=True)
        (FOUND / f"{name}-{len(crashes)}.bin").write_bytes(data)
        print(f"  {name} failure: {problem}")

    while time.monotonic() < deadline:
        run()
    return cases, crashes


def fuzz_mllp(streams: int, seeds: list[bytes]) -> tuple[int, int]:
    """Hostile byte streams at a real listener; after each, a good message must get AA."""
    import random

    rng = random.Random(5)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        intake = start_intake(Path(tmp), max_message_bytes=4096, idle_timeout_s=2.0)
        try:
            for i in range(streams):
                parts = []
                for _ in range(rng.randint(1, 4)):
                    seed = bytearray(rng.choice(seeds))
                    if rng.random() < 0.5:
                        seed[rng.randrange(len(seed))] = rng.randrange(256)
                    frame = b"\x0b" * rng.randint(0, 2) + bytes(seed) + rng.choice(
                        [b"\x1c\x0d", b"\x1c", b"", b"\x0d", b"\x1c\x0d\x1c\x0d"])
                    parts.append(frame if rng.random() < 0.8 else rng.randbytes(rng.randint(1, 6000)))
                with socket.create_connection(("127.0.0.1", intake.port), timeout=5) as sock:
                    try:
                        sock.sendall(b"".join(parts))
                        sock.shutdown(socket.SHUT_WR)
                        while sock.recv(65536):
                            pass
                    except OSError:
                        pass
                with MllpClient(intake.port, timeout_s=10) as client:
                    ack = client.send(adt(f"GOOD{i}"))
                if msa(ack)[1] != "AA":
                    failures += 1
                    print(f"  mllp stream {i}: good message answered {msa(ack)[1]}")
        finally:
            intake.listener.stop()
            intake.processor.stop()
    return streams, failures


def _mutations(rng: random.Random, seeds: list[bytes]) -> bytes:
    """A seed with a few flipped bytes, maybe cut short or with random bytes appended."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(0, 6)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.3:
        data = data[: rng.randint(0, len(data))]
    if rng.random() < 0.3:
        data += rng.randbytes(rng.randint(1, 3000))
    return bytes(data) if rng.random() < 0.9 else rng.randbytes(rng.randint(1, 6000))


def fuzz_association(streams: int, tls: bool) -> tuple[int, int]:
    """Hostile streams at a real DICOM listener (TLS or plain); after each, a good C-ECHO."""
    rng = random.Random(11 if tls else 7)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        options: dict[str, object] = {"acse_timeout_s": 1.0, "network_timeout_s": 1.0, "dimse_timeout_s": 2.0,
                                      "max_instance_bytes": 4096}
        client: ssl.SSLContext | None = None
        if tls:
            from tests.support.pki import make_pki

            pki = make_pki(Path(tmp) / "pki")
            options.update(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_handshake_timeout_s=1.0)
            client = ssl.create_default_context(cafile=str(pki.ca_cert))
        listener = start_receive_listener(Path(tmp), **options)
        try:
            for i in range(streams):
                stream = _mutations(rng, association_seeds())
                if tls and i % 2 == 0:  # half at the handshake itself, half inside a session
                    send_hostile_stream(listener.port, _mutations(rng, [client_hello()]), None, wait_s=3)
                else:
                    send_hostile_stream(listener.port, stream, client, wait_s=3)
                # Every association the stream opened ends within its phase timeouts (1-2 s
                # here); one still open later is a leak that would eat the peer's budget.
                deadline = time.monotonic() + 5.0
                while listener.server.active_associations and time.monotonic() < deadline:
                    time.sleep(0.05)
                if listener.server.active_associations:
                    failures += 1
                    print(f"  {'tls' if tls else 'association'} stream {i}: an association outlived its timeouts")
                elif not echo_succeeds(listener.port, client):
                    failures += 1
                    print(f"  {'tls' if tls else 'association'} stream {i}: the good C-ECHO failed")
        finally:
            listener.stop()
    return streams, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per parser")
    parser.add_argument("--mllp-streams", type=int, default=200)
    parser.add_argument("--association-streams", type=int, default=200, help="plain, and as many over TLS")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")  # pydicom warns on every invalid value the mutations make
    hl7 = hl7_seeds()
    total_failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        dicom_target = DicomTarget(Path(tmp))
        runs: tuple[tuple[str, Callable[[bytes], object], tuple[type[BaseException], ...], list[bytes],
                          Callable[[object], bool]], ...] = (
            ("dicom", dicom_target, (), [dicom_seed(Path(tmp))], lambda status: status in DICOM_STATUSES),
            ("pdu", PduGuardTarget(), (), association_seeds(), lambda _: True),
            ("hl7", hl7_target, HL7_EXPECTED, hl7, lambda _: True))
        for name, target, expected, seeds, accept in runs:
            start = time.monotonic()
            cases, crashes = fuzz(name, target, expected, mutated(seeds), args.seconds, accept)
            elapsed = time.monotonic() - start
            total_failures += len(crashes)
            print(f"{name}: cases={cases} seconds={elapsed:.1f} rate={cases / elapsed:.0f}/s"
                  f" failures={len(crashes)}")
        dicom_target.close()
    for name, tls in (("association", False), ("tls", True)):
        start = time.monotonic()
        streams, failures = fuzz_association(args.association_streams, tls)
        total_failures += failures
        print(f"{name}: streams={streams} seconds={time.monotonic() - start:.1f} failures={failures}")
    start = time.monotonic()
    streams, failures = fuzz_mllp(args.mllp_streams, hl7)
    total_failures += failures
    print(f"mllp: streams={streams} seconds={time.monotonic() - start:.1f} failures={failures}")
    return 1 if total_failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
