"""Memory per received object, as a ratio to the object's size, in a running node.

The node (``hemex serve``, its own process) receives synthetic CT objects of about
600 MB (one slice of 17320 x 17320 16-bit pixels, zeros: not anatomy) from dcmtk's
storescu: one alone, then three at once. Its resident memory is sampled every 10 ms
from /proc; the figure is the peak rise over the RSS just before sending, divided by
the bytes of one object (the reference measured in the same run). Before issue 11 the
probes saw 0.8 -> 3.3 GB for one object (a ratio of about 4) and 4.2 GB for three.

Also measured, each against the same reference:
- the same object refused: dicom.max_instance_bytes below its size (the association is
  aborted as soon as the data set passes the limit);
- MLLP: N connections each sending an unterminated 1 MiB frame (the probes: +460 MB for
  400, never released), peak rise and the rise left after hl7.frame_timeout_s.

Usage: .venv/bin/python -m bench.bench_receive_memory [--megabytes 600] [--parallel 3]
           [--mllp-connections 400]
Needs about 6 x the object size of free disk in the temporary folder.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.support.peers import DCMTK_ENV, free_port, port_open, wait_until

MIB = 1024 * 1024


def write_large_ct(path: Path, megabytes: int) -> int:
    """A one-slice CT of about ``megabytes`` MB, written without holding its pixels in
    memory; returns the bytes of its data set as it goes over the wire."""
    side = int((megabytes * 1_000_000 / 2) ** 0.5)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "BENCH-MEMORY"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.Rows, ds.Columns = [0.1, 0.1], side, side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.save_as(path, enforce_file_format=True)
    pixels = side * side * 2
    with open(path, "ab") as out:
        out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixels))
        chunk = bytes(16 * MIB)
        left = pixels
        while left:
            out.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))
    return path.stat().st_size - 132 - _meta_length(path)


def _meta_length(path: Path) -> int:
    with open(path, "rb") as f:
        f.seek(132 + 8)
        (group_length,) = struct.unpack("<L", f.read(4))
    return 12 + group_length


class RssSampler:
    """The highest VmRSS of ``pid`` while running (10 ms samples)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.rss_kib())
            time.sleep(0.01)

    def __enter__(self) -> RssSampler:  # noqa: PYI034
        self.peak_kib = self.rss_kib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_node(work: Path, max_instance_bytes: int) -> tuple[subprocess.Popen[bytes], int, int]:
    """``hemex serve`` on free loopback ports; analysis never starts (one-hour quiet period)."""
    dicom_port, hl7_port = free_port(), free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "hemex.toml"
    config.write_text(f"""data_dir = "{work / 'data'}"
[dicom]
host = "127.0.0.1"
port = {dicom_port}
allowed_calling_ae_titles = ["STORESCU"]
min_free_disk_mb = 0
max_instance_bytes = {max_instance_bytes}
[series]
quiet_period_s = 3600.0
[hl7]
host = "127.0.0.1"
port = {hl7_port}
min_free_disk_mb = 0
frame_timeout_s = 5.0
[metrics]
port = 0
[prediction]
enabled = false
""", encoding="utf-8")
    script = Path(sys.executable).with_name("hemex")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "daemon.cli"]
    with open(work / "node.out", "ab") as out:
        proc = subprocess.Popen([*command, "serve", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: proc.poll() is None and port_open(dicom_port) and port_open(hl7_port), timeout_s=180)
    time.sleep(2.0)  # let start-up allocations settle before the baseline
    return proc, dicom_port, hl7_port


def send(port: int, files: list[Path]) -> list[int]:
    """One storescu per file, all at once; their exit codes."""
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "-to", "30", "-ta", "30", "-td", "600",
                               "127.0.0.1", str(port), str(path)], env=DCMTK_ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for path in files]
    return [proc.wait() for proc in procs]


def measure(proc: subprocess.Popen[bytes], action: object) -> tuple[int, int, object]:
    """(baseline KiB, peak KiB, what ``action()`` returned)."""
    with RssSampler(proc.pid) as sampler:
        baseline = sampler.rss_kib()
        outcome = action()  # type: ignore[operator]
    return baseline, sampler.peak_kib, outcome


def mllp_flood(port: int, connections: int, frame_bytes: int) -> int:
    """``connections`` connections each sending an unterminated frame; how many the node kept open."""
    sockets, kept = [], 0
    payload = b"\x0bMSH|^~\\&|LAB|HOSP|HEMEX|HOSP|2024||ORU^R01|X|P|2.5.1\r" + b"X" * frame_bytes
    for _ in range(connections):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            try:
                sock.send(payload)
            except (BlockingIOError, OSError):
                pass
            sockets.append(sock)
        except OSError:
            break
    time.sleep(1.0)
    for sock in sockets:
        try:
            if sock.recv(1, socket.MSG_PEEK) != b"":
                kept += 1
        except BlockingIOError:
            kept += 1
        except OSError:
            pass
    time.sleep(1.0)
    for sock in sockets:
        sock.close()
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=600)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--mllp-connections", type=int, default=400)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hemex-memory-"))
    try:
        files = [work / f"big{i}.dcm" for i in range(args.parallel + 1)]
        size = 0
        for path in files:
            size = write_large_ct(path, args.megabytes)
        print(f"object: a one-slice CT whose data set is {size:,} bytes; dcmtk storescu -> hemex serve")
        rows = []
        proc, dicom_port, hl7_port = start_node(work / "accept", max_instance_bytes=4 * size)
        try:
            base, peak, codes = measure(proc, lambda: send(dicom_port, files[:1]))
            rows.append(("1 object stored", base, peak, size, codes))
            base, peak, codes = measure(proc, lambda: send(dicom_port, files[1:1 + args.parallel]))
            rows.append((f"{args.parallel} objects at once, stored", base, peak, size, codes))
            base, peak, kept = measure(proc, lambda: mllp_flood(hl7_port, args.mllp_connections, MIB))
            time.sleep(6.0)  # past hl7.frame_timeout_s: the frames' buffers are released
            after = RssSampler(proc.pid).rss_kib()
            rows.append(((f"MLLP: {args.mllp_connections} unterminated 1 MiB frames ({kept} kept open),"
                          f" {after - base:+d} KiB after the frame timeout"), base, peak,
                         args.mllp_connections * MIB, None))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        shutil.rmtree(work / "accept", ignore_errors=True)
        proc, dicom_port, _ = start_node(work / "refuse", max_instance_bytes=size // 2)
        try:
            base, peak, codes = measure(proc, lambda: send(dicom_port, files[:1]))
            rows.append(("1 object over max_instance_bytes (refused)", base, peak, size, codes))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        print(f"{'case':<72} {'RSS before':>11} {'peak rise':>10} {'ratio':>6}  storescu exit")
        for name, base, peak, reference, codes in rows:
            rise = (peak - base) * 1024
            print(f"{name:<72} {base / 1024:>8.0f} MB {rise / 1e6:>7.0f} MB {rise / reference:>6.3f}  {codes}")
        print("ratio = peak RSS rise / the size of one object (MLLP: / the bytes of all the frames)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
