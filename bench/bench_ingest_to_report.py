"""Ingest rate and last-image-to-report latency of the node, against references in the same run.

For a synthetic 40-slice (2.5 mm) and a 300-slice (0.625 mm) head CT series, 512 x 512
(tests/support/phantoms.py, no patient data):

1. C-STORE ingest: dcmtk's storescu sends the series to dcmtk's own storescp (writes
   files, no fsync), to ``hemex serve`` with ``dicom.durability = "power-loss"`` (file
   and folder fsynced, database commit durable before each success; the node that then
   analyses) and to a receive-only ``hemex serve --role receive`` with
   ``"process-crash"``; the disk's fsync floor (write the same bytes, fsync, rename,
   fsync the folder, per image) and the reference 1/(1/storescp + 1/floor) are measured
   in the same run (bench/ingest_reference.py). Images/s of each and the ratios issue 10
   sets targets for (bench/bench_load.py does the same with 8 associations).
2. Last image received -> SR stored in Orthanc, split by stage, read from the node's
   database and result summary: completion decision, analysis stages (select, load,
   volume, mask, measure, clinical), report (SEG + SR built and validated by dciodvfy
   and DicomSRValidator), commit, C-STORE to Orthanc. Each stage is also given as a
   ratio to storescp's time to receive the same series (moving the bytes, the floor).
3. The node's peak RSS (VmHWM of the ``hemex serve`` process).

No expansion model is configured (see bench/bench_inference.py for the predictor). The
slices carry no Images in Acquisition (as many scanners send them), so the latency
includes the completion decision from the slice stack (storescu releases its
association after the last image: ``series.complete_on_release``); with
``--images-in-acquisition`` they carry it and the count completes the series.

Usage: .venv/bin/python -m bench.bench_ingest_to_report [--repeats 3] [--sizes 40 300]
       [--images-in-acquisition] [--no-complete-on-release]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom

from bench.ingest_reference import combined_rate, fsync_floor, settle
from tests.support.node_process import NodeDatabase
from tests.support.peers import DCMTK_ENV, Orthanc, free_port, port_open, start_orthanc, wait_until
from tests.support.phantoms import make_head_ct_series

ROOT = Path(__file__).resolve().parents[1]
SLICE_MM = {40: 2.5, 300: 0.625}
TARGET_S = {40: 3.0, 300: 5.0}  # issue 10: last image -> SR in PACS, median


@dataclass
class Run:
    ingest_s: float  # to the node that analyses (power-loss)
    stages: dict[str, float]
    process_crash_ingest_s: float  # to the receive-only node (process-crash)
    floor_per_s: float


def _storescu(port: int, folder: Path, called: str) -> float:
    start = time.perf_counter()
    subprocess.run(["storescu", "-aet", "STORESCU", "-aec", called, "+sd", "-nh", "127.0.0.1", str(port),
                    str(folder)], check=True, capture_output=True, timeout=1800, env=DCMTK_ENV)
    return time.perf_counter() - start


def _start_storescp(folder: Path) -> tuple[subprocess.Popen, int]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(["storescp", "-aet", "STORESCP", "--output-directory", str(folder), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    wait_until(lambda: port_open(port), timeout_s=30)
    return process, port


def _start_node(workdir: Path, orthanc: Orthanc, durability: str = "power-loss",
                receive_only: bool = False, complete_on_release: bool = True) -> tuple[subprocess.Popen, int, Path]:
    """``hemex serve`` on its own data dir; returns the process, its DICOM port and data dir."""
    port = free_port()
    data_dir = workdir / f"node-{durability}"
    config = workdir / f"hemex-{durability}.toml"
    config.write_text(f"""
data_dir = "{data_dir}"
[dicom]
host = "127.0.0.1"
port = {port}
allowed_calling_ae_titles = ["STORESCU"]
durability = "{durability}"
[series]
complete_on_release = {str(complete_on_release).lower()}
[hl7]
enabled = false
[[destinations]]
name = "pacs"
ae_title = "{orthanc.ae_title}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
""")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    roles = ["--role", "receive"] if receive_only else []
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "serve", "--config", str(config), *roles],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: port_open(port), timeout_s=120)
    return process, port, data_dir


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sr_in_orthanc(orthanc: Orthanc, study_uid: str) -> bool:
    for instance in orthanc.instances():
        tags = orthanc.instance_tags(instance)
        if tags.get("Modality") == "SR" and tags.get("StudyInstanceUID") == study_uid:
            return True
    return False


def _delivered(db: NodeDatabase, study_uid: str) -> bool:
    """The node has recorded the SR's delivery (it commits after Orthanc's success)."""
    rows = db.rows("SELECT o.delivered_at FROM outbox o JOIN results r ON o.item_key = r.sr_sop_uid"
                   " WHERE r.study_uid = :uid", {"uid": study_uid})
    return bool(rows and rows[0][0])


def _stages(db: NodeDatabase, study_uid: str, sr_seen_at: float) -> dict[str, float]:
    uid = {"uid": study_uid}
    last_image = db.rows("SELECT MAX(received_at) FROM instances WHERE study_uid = :uid", uid)[0][0]
    completed = db.rows("SELECT MAX(completed_at) FROM series WHERE study_uid = :uid", uid)[0][0]
    result_at, summary_json, sr_uid = db.rows(
        "SELECT created_at, summary_json, sr_sop_uid FROM results WHERE study_uid = :uid", uid)[0]
    delivered = db.rows("SELECT delivered_at FROM outbox WHERE item_key = :sr", {"sr": sr_uid})[0][0]
    analysis = json.loads(summary_json)["stage_seconds"]
    stages = {"completion decision": completed - last_image}
    stages.update({name: seconds for name, seconds in analysis.items()})
    stages["queue, files, commit"] = result_at - completed - sum(analysis.values())
    stages["C-STORE to Orthanc"] = delivered - result_at
    stages["total to SR in Orthanc"] = sr_seen_at - last_image
    return stages


def _drop_images_in_acquisition(paths: list[Path]) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.ImagesInAcquisition
        ds.save_as(path, enforce_file_format=True)


def bench_size(slices: int, repeats: int, workdir: Path, orthanc: Orthanc, node_port: int, db: NodeDatabase,
               storescp_port: int, process_crash_port: int,
               images_in_acquisition: bool = False) -> tuple[list[float], list[Run]]:
    reference, runs = [], []
    for repeat in range(repeats):
        folder = workdir / f"ct{slices}-{repeat}"
        phantom = make_head_ct_series(folder, slices=slices, slice_mm=SLICE_MM[slices], seed=repeat,
                                      patient_id=f"BENCH-{slices}-{repeat}", accession=f"ACC-{slices}-{repeat}")
        if not images_in_acquisition:
            _drop_images_in_acquisition(phantom.paths)
        settle()
        reference.append(_storescu(storescp_port, folder, "STORESCP"))
        settle()
        floor = fsync_floor(sorted(folder.iterdir()), workdir / "floor")
        shutil.rmtree(workdir / "floor")
        # The receive-only node first, while the analysing node is idle.
        settle()
        process_crash = _storescu(process_crash_port, folder, "HEMEX")
        settle()
        ingest = _storescu(node_port, folder, "HEMEX")
        study_uid = phantom.study_uid
        wait_until(lambda: _sr_in_orthanc(orthanc, study_uid), timeout_s=1800, interval_s=0.1)  # noqa: B023
        seen_at = time.time()
        wait_until(lambda: _delivered(db, study_uid), timeout_s=60)  # noqa: B023 - called at once
        runs.append(Run(ingest, _stages(db, study_uid, seen_at), process_crash, floor))
    return reference, runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 300], choices=sorted(SLICE_MM))
    parser.add_argument("--images-in-acquisition", action="store_true",
                        help="send Images in Acquisition (the count completes the series)")
    parser.add_argument("--no-complete-on-release", action="store_true",
                        help="series.complete_on_release = false: a whole stack waits series.confirm_s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hemex-bench-") as tmp:
        workdir = Path(tmp)
        orthanc = start_orthanc(workdir / "orthanc")
        storescp, storescp_port = _start_storescp(workdir / "storescp")
        node, node_port, data_dir = _start_node(workdir, orthanc,
                                                complete_on_release=not args.no_complete_on_release)
        receiver, receiver_port, _ = _start_node(workdir, orthanc, "process-crash", receive_only=True)
        db = NodeDatabase(data_dir)
        try:
            print(f"machine: {os.cpu_count()} CPUs; median of {args.repeats} runs; 512 x 512 slices")
            for slices in args.sizes:
                reference, runs = bench_size(slices, args.repeats, workdir, orthanc, node_port, db,
                                             storescp_port, receiver_port, args.images_in_acquisition)
                ref = statistics.median(reference)
                ingest = statistics.median(r.ingest_s for r in runs)
                process_crash = statistics.median(r.process_crash_ingest_s for r in runs)
                floor = statistics.median(r.floor_per_s for r in runs)
                combined = combined_rate(slices / ref, floor)
                print(f"\n== {slices}-slice series ==")
                print(f"ingest   storescp {slices / ref:7.1f} images/s   fsync floor {floor:7.1f} images/s"
                      f"   reference 1/(1/storescp + 1/floor) {combined:7.1f} images/s")
                print(f"         hemex power-loss    {slices / ingest:7.1f} images/s"
                      f"   {slices / ingest / combined:.2f} x reference (target >= 0.9)")
                print(f"         hemex process-crash {slices / process_crash:7.1f} images/s"
                      f"   {ref / process_crash:.2f} x storescp (target >= 0.8)")
                print(f"{'stage':28s} {'seconds':>9s} {'x storescp ingest':>18s} {'first run':>10s}")
                for stage in runs[0].stages:
                    seconds = statistics.median(r.stages[stage] for r in runs)
                    print(f"{stage:28s} {seconds:9.3f} {seconds / ref:18.2f} {runs[0].stages[stage]:10.3f}")
                totals = [r.stages["total to SR in Orthanc"] for r in runs]
                print(f"total of each run, in the order run: {', '.join(f'{t:.2f}' for t in totals)} s"
                      f" (target: median <= {TARGET_S[slices]:g} s)")
            print(f"\nnode peak RSS: {_peak_rss_mib(node.pid):.0f} MiB")
        finally:
            node.terminate()
            receiver.terminate()
            node.wait(60)
            receiver.wait(60)
            storescp.terminate()
            orthanc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
