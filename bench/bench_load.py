"""Load: N concurrent scanners (dcmtk storescu) sending 300-slice series, plus an HL7 burst.

The listener (start_listener + InstanceStore, the node's receive path, run by
bench/kill_loop.py's serve mode) runs in its own process so its peak RSS (VmHWM) is its
own. Each run measures, on the same files and this machine (bench/ingest_reference.py):
dcmtk's storescp, pynetdicom with a handler that stores nothing (the ceiling of any
receiver built on it, bench/pynetdicom_ceiling.py), the disk's fsync floor (write the
bytes, fsync, rename, fsync the folder, per image), the combination 1/(1/storescp +
1/floor), and the node under ``dicom.durability = "power-loss"`` and
``"process-crash"``, with 1 and N associations; then the ratios issue 10 sets targets for. Slices are synthetic CT (not anatomy);
127.0.0.1 only, bounded counts. Runs alternate between the receivers and the median of
``--repeats`` is printed, since the machine is shared.

Usage: .venv/bin/python -m bench.bench_load [--associations 8] [--slices 300] [--size 512]
       [--repeats 3] [--hl7 1000] [--postgresql]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from bench.ingest_reference import combined_rate, fsync_floor, settle
from bench.kill_loop import _free_port, _start
from tests.support.dicom_listener import tiny_ct
from tests.support.peers import DCMTK_ENV
from tests.support.postgres import PASSWORD as POSTGRES_PASSWORD
from tests.support.postgres import PostgresServer


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


@dataclass(frozen=True)
class Run:
    """One receiver's run: images/s, failed storescu processes, peak RSS (KiB)."""

    rate: float
    failures: int
    peak_rss_kib: int


def run_hemex(data_dir: Path, folders: list[Path], images: int, durability: str,
              postgres: PostgresServer | None = None) -> Run:
    """The node's receive path with ``durability``, a fresh data dir (and a fresh PostgreSQL
    database when ``postgres`` is given), all folders at once."""
    port = _free_port()
    if postgres is not None:  # the listener process reads its database from the environment
        os.environ["HEMEX_DATABASE__URL"] = postgres.create_database()
        os.environ["HEMEX_DATABASE__PASSWORD"] = POSTGRES_PASSWORD
    proc = _start(data_dir, port, durability)
    try:
        settle()
        seconds, failures = send_concurrently(port, folders)
        return Run(images / seconds, failures, _peak_rss_kib(proc.pid))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def run_storescp(out: Path, folders: list[Path], images: int) -> Run:
    """dcmtk's storescp (one process per association, ``--fork``) writing into ``out``."""
    out.mkdir()
    try:
        return _run_peer(["storescp", "-aet", "HEMEX", "-od", str(out), "--fork", "{port}"], folders, images)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_pynetdicom_ceiling(folders: list[Path], images: int) -> Run:
    """pynetdicom with a handler that stores nothing (bench/pynetdicom_ceiling.py)."""
    return _run_peer([sys.executable, "-m", "bench.pynetdicom_ceiling", "--port", "{port}"], folders, images)


def _run_peer(command: list[str], folders: list[Path], images: int) -> Run:
    port = _free_port()
    proc = subprocess.Popen([part.format(port=port) for part in command], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)  # readiness poll
        settle()
        seconds, failures = send_concurrently(port, folders)
        return Run(images / seconds, failures, _peak_rss_kib(proc.pid))
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


LEVELS = ("power-loss", "process-crash")


def measure(work: Path, folders: list[Path], slices: int, repeats: int,
            postgres: PostgresServer | None) -> dict[str, list[Run]]:
    """Every receiver, alternating, ``repeats`` times; runs by label."""
    runs: dict[str, list[Run]] = {}
    n = len(folders)
    first_series = sorted(folders[0].iterdir())
    for repeat in range(repeats):
        tag = f"r{repeat}"
        runs.setdefault("storescp 1", []).append(run_storescp(work / f"storescp-1-{tag}", folders[:1], slices))
        runs.setdefault("ceiling 1", []).append(run_pynetdicom_ceiling(folders[:1], slices))
        floor_dir = work / f"floor-{tag}"
        settle()
        runs.setdefault("floor", []).append(Run(fsync_floor(first_series, floor_dir), 0, 0))
        shutil.rmtree(floor_dir)
        for level in LEVELS:
            runs.setdefault(f"{level} 1", []).append(
                run_hemex(work / f"hemex-{level}-1-{tag}", folders[:1], slices, level, postgres))
        runs.setdefault(f"storescp {n}", []).append(run_storescp(work / f"storescp-{n}-{tag}", folders, slices * n))
        runs.setdefault(f"ceiling {n}", []).append(run_pynetdicom_ceiling(folders, slices * n))
        for level in LEVELS:
            runs.setdefault(f"{level} {n}", []).append(
                run_hemex(work / f"hemex-{level}-{n}-{tag}", folders, slices * n, level, postgres))
    return runs


def report(runs: dict[str, list[Run]], n: int) -> None:
    """The table of rates (medians) and the ratios with issue 10's targets."""
    rate = {label: statistics.median(r.rate for r in group) for label, group in runs.items()}
    reference = combined_rate(rate["storescp 1"], rate["floor"])

    def line(label: str, name: str, note: str = "") -> None:
        group = runs[label]
        rss = max(r.peak_rss_kib for r in group) / 1024
        failures = sum(r.failures for r in group)
        memory = f"peak RSS {rss:4.0f} MiB  failures {failures}" if rss else ""
        print(f"{name:58s} {rate[label]:7.0f}   {memory:32s} {note}")

    print(f"{'receiver':58s} {'images/s':>7s}")
    line("storescp 1", "dcmtk storescp, 1 association (no fsync)")
    line("ceiling 1", "pynetdicom storing nothing, 1 association (its ceiling)",
         f"{rate['ceiling 1'] / rate['storescp 1']:.2f} x storescp")
    line("floor", "fsync floor: write, fsync, rename, fsync folder per image")
    print(f"{'reference: storescp + floor, 1/(1/storescp + 1/floor)':58s} {reference:7.0f}")
    line("power-loss 1", "hemex power-loss, 1 association",
         f"{rate['power-loss 1'] / reference:.2f} x reference (target >= 0.9)")
    line("process-crash 1", "hemex process-crash, 1 association",
         f"{rate['process-crash 1'] / rate['storescp 1']:.2f} x storescp (target >= 0.8)")
    line(f"storescp {n}", f"dcmtk storescp, {n} associations")
    line(f"ceiling {n}", f"pynetdicom storing nothing, {n} associations",
         f"{rate[f'ceiling {n}'] / rate[f'storescp {n}']:.2f} x storescp")
    line(f"power-loss {n}", f"hemex power-loss, {n} associations",
         f"{rate[f'power-loss {n}'] / rate['power-loss 1']:.2f} x 1 association (target >= 2.5);"
         f" {rate[f'power-loss {n}'] / rate[f'storescp {n}']:.2f} x storescp")
    line(f"process-crash {n}", f"hemex process-crash, {n} associations",
         f"{rate[f'process-crash {n}'] / rate['process-crash 1']:.2f} x 1 association;"
         f" {rate[f'process-crash {n}'] / rate[f'storescp {n}']:.2f} x storescp")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=8)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hl7", type=int, default=1000)
    parser.add_argument("--postgresql", action="store_true",
                        help="keep the node's state in a local PostgreSQL server (tests/support/postgres.py)"
                             " instead of SQLite, a fresh database per run")
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
        mb = sum(f.stat().st_size for f in folders[0].iterdir()) / 1e6 / args.slices
        print(f"machine: {os.cpu_count()} CPUs; {args.slices} slices of {args.size} x {args.size} ({mb:.2f} MB)"
              f" per association; median of {args.repeats} runs; dcmtk with TCP_NODELAY=1;"
              f" node database {'PostgreSQL' if args.postgresql else 'SQLite'}")
        postgres = PostgresServer.start() if args.postgresql else None
        try:
            report(measure(work, folders, args.slices, args.repeats, postgres), args.associations)
        finally:
            if postgres is not None:
                postgres.stop()
        if args.hl7:
            print(f"hl7 burst: {args.hl7} messages {hl7_burst(work, args.hl7):.0f} messages/s (one connection)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
