"""Load: N concurrent scanners (dcmtk storescu) sending 300-slice series, plus an HL7 burst.

The listener (start_listener + InstanceStore, the node's receive path, run by
bench/kill_loop.py's serve mode) runs in its own process so its peak RSS (VmHWM) is its
own; the same load then goes to dcmtk's storescp in the same run for a ratio. Slices are
synthetic 128x128 CT (not anatomy). 127.0.0.1 only, bounded counts.

Usage: .venv/bin/python -m bench.bench_load [--associations 8] [--slices 300] [--hl7 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from bench.kill_loop import _free_port, _start
from tests.support.dicom_listener import tiny_ct
from tests.support.peers import DCMTK_ENV


def make_series(folder: Path, slices: int, size: int) -> list[Path]:
    """One synthetic series of ``slices`` CT slices of ``size`` x ``size`` pixels."""
    study, series = generate_uid(), generate_uid()
    template = pydicom.dcmread(tiny_ct(folder / "t.dcm", study, series, 0))
    (folder / "t.dcm").unlink()
    rng = np.random.default_rng(0)
    files = []
    for i in range(slices):
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = i + 1
        template.ImagePositionPatient = [0, 0, float(i)]
        template.ImagesInAcquisition = slices
        template.Rows = template.Columns = size
        template.PixelData = rng.integers(0, 1100, (size, size), dtype=np.int16).tobytes()
        path = folder / f"{i:04d}.dcm"
        template.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def send_concurrently(port: int, folders: list[Path]) -> tuple[float, int]:
    """One storescu per folder at once; (seconds, failures)."""
    start = time.monotonic()
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "+sd", "-nh",
                               "127.0.0.1", str(port), str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV)
             for folder in folders]
    failures = sum(proc.wait(timeout=600) != 0 for proc in procs)
    return time.monotonic() - start, failures


def run_hemex(work: Path, folders: list[Path]) -> tuple[float, int, int]:
    port = _free_port()
    proc = _start(work / f"hemex-{len(folders)}", port)
    try:
        seconds, failures = send_concurrently(port, folders)
        return seconds, failures, _peak_rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def run_storescp(work: Path, folders: list[Path]) -> tuple[float, int, int]:
    port = _free_port()
    out = work / f"storescp-{len(folders)}"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "HEMEX", "-od", str(out), "--fork",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)  # readiness poll
        seconds, failures = send_concurrently(port, folders)
        return seconds, failures, _peak_rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def hl7_burst(work: Path, count: int) -> float:
    """Messages/s of one MLLP connection sending ``count`` ADT messages back to back."""
    from tests.support.hl7_peers import MllpClient, adt, msa, start_intake

    intake = start_intake(work / "hl7")
    try:
        with MllpClient(intake.port) as client:
            start = time.monotonic()
            for i in range(count):
                assert msa(client.send(adt(f"LOAD{i}", patient_id=f"P{i % 50}")))[1] == "AA"
            return count / (time.monotonic() - start)
    finally:
        intake.listener.stop()
        intake.processor.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=8)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--hl7", type=int, default=1000)
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folders = []
        for n in range(args.associations):
            (work / f"in{n}").mkdir()
            make_series(work / f"in{n}", args.slices, args.size)
            folders.append(work / f"in{n}")
        mb = sum(f.stat().st_size for f in folders[0].iterdir()) / 1e6
        for label, group in (("1 association", folders[:1]), (f"{args.associations} associations", folders)):
            images = args.slices * len(group)
            h_s, h_fail, h_rss = run_hemex(work, group)
            d_s, d_fail, d_rss = run_storescp(work, group)
            print(f"{label}: hemex {images / h_s:.0f} images/s {mb * len(group) / h_s:.1f} MB/s "
                  f"peak_rss={h_rss / 1024:.0f} MiB failures={h_fail} | storescp {images / d_s:.0f} images/s "
                  f"peak_rss={d_rss / 1024:.0f} MiB failures={d_fail} | ratio hemex/storescp={d_s / h_s:.2f}")
        print(f"hl7 burst: {args.hl7} messages {hl7_burst(work, args.hl7):.0f} messages/s (one connection)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
