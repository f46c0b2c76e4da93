"""kill -9 the DICOM listener at random moments while a scanner sends; count what survived.

The process under test is the listener alone (tests/support/dicom_listener.py: the
node's own receive path) in a subprocess; bench/kill_loop_node.py kills the whole node
(`hemex serve`) while it also analyses and delivers. A pynetdicom SCU sends synthetic
tiny CT slices and records each SOP Instance UID the listener acknowledged with 0x0000;
after each kill the listener restarts on the same data dir and every acknowledged
instance must be in the database and its spool file must decode. Unacknowledged ones
are re-sent.

Usage: .venv/bin/python -m bench.kill_loop [--kills 20] [--images 400] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom


def serve(data_dir: Path, port: int) -> None:
    """The process under test: the node's receive path on ``port``."""
    from tests.support.dicom_listener import start_receive_listener

    start_receive_listener(data_dir, port=port, min_free_disk_mb=0)
    threading.Event().wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.kill_loop", "--serve", str(data_dir), "--port", str(port)],
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)  # readiness poll, bounded by the deadline
    proc.kill()
    raise RuntimeError("listener did not start")


@dataclass
class Tally:
    kills: int = 0
    kills_mid_send: int = 0  # kills that landed while the scanner was still sending
    sent: int = 0
    acknowledged: set[str] = field(default_factory=set)
    lost: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def _send_until_killed(port: int, files: list[Path], tally: Tally) -> None:
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="HEMEX")
    if not assoc.is_established:
        return
    try:
        for path in files:
            uid = path.stem
            if uid in tally.acknowledged:
                continue
            tally.sent += 1
            status = assoc.send_c_store(path)
            if "Status" not in status:
                return  # the association died: the listener was killed
            if int(status.Status) == 0x0000:
                tally.acknowledged.add(uid)
    finally:
        if assoc.is_established:
            assoc.release()


def _check(data_dir: Path, tally: Tally) -> None:
    from tests.support.databases import open_database

    db = open_database(data_dir / "db.sqlite3")  # opened after the last kill: recovers the WAL
    with db.reading() as repos:
        rows = {i.sop_instance_uid: i.path for i in repos.images.instances()}
    db.close()
    for uid in tally.acknowledged:
        if uid not in rows:
            tally.lost.append(uid)
            continue
        try:
            pydicom.dcmread(rows[uid]).pixel_array  # noqa: B018 - decoding is the check
        except (OSError, ValueError, pydicom.errors.InvalidDicomError):
            tally.unreadable.append(uid)


def make_series(folder: Path, count: int) -> list[Path]:
    """``count`` synthetic tiny CT slices named by their SOP Instance UID."""
    from pydicom.uid import generate_uid

    from tests.support.dicom_listener import tiny_ct

    study, series = generate_uid(), generate_uid()
    files = []
    for i in range(count):
        path = tiny_ct(folder / f"{i}.dcm", study, series, i)
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        files.append(path.rename(folder / f"{uid}.dcm"))
    return files


def kill_loop(kills: int, images: int, seed: int, work: Path) -> Tally:
    """Send ``images`` slices while killing the listener ``kills`` times; then check."""
    rng = random.Random(seed)
    files = make_series(work / "in", images)
    data_dir = work / "data"
    tally = Tally()
    port = _free_port()
    for _ in range(kills):
        proc = _start(data_dir, port)
        sender = threading.Thread(target=_send_until_killed, args=(port, files, tally))
        sender.start()
        time.sleep(rng.uniform(0.05, 0.6))  # the random moment of the kill
        tally.kills_mid_send += sender.is_alive()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tally.kills += 1
        sender.join(timeout=30)
    proc = _start(data_dir, port)  # a last run with no kill sends the rest
    try:
        _send_until_killed(port, files, tally)
    finally:
        proc.kill()
        proc.wait()
    _check(data_dir, tally)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tally = kill_loop(args.kills, args.images, args.seed, Path(tmp))
    print(f"kills={tally.kills} kills_mid_send={tally.kills_mid_send} images={args.images} sends={tally.sent} acknowledged={len(tally.acknowledged)} "
          f"lost={len(tally.lost)} unreadable={len(tally.unreadable)} seconds={time.monotonic() - start:.1f}")
    return 1 if tally.lost or tally.unreadable or len(tally.acknowledged) != args.images else 0


if __name__ == "__main__":
    raise SystemExit(main())
