"""Ingest rate and last-image-to-report latency of the node, against references in the same run.

For a synthetic 40-slice (2.5 mm) and a 300-slice (0.625 mm) head CT series, 512 x 512
(tests/support/phantoms.py, no patient data):

1. C-STORE ingest: dcmtk's storescu sends the series to ``hemex serve`` (durable: temp
   file, fsync, rename, SQLite commit before each success) and to dcmtk's own storescp
   (writes files, no fsync) on this machine; images/s of each and their ratio.
2. Last image received -> SR stored in Orthanc, split by stage, read from the node's
   database and result summary: completion decision, analysis stages (select, load,
   volume, mask, measure, clinical), report (SEG + SR built and validated by dciodvfy
   and DicomSRValidator), commit, C-STORE to Orthanc. Each stage is also given as a
   ratio to storescp's time to receive the same series (moving the bytes, the floor).
3. The node's peak RSS (VmHWM of the ``hemex serve`` process).

No expansion model is configured (see bench/bench_inference.py for the predictor). The
slices carry no Images in Acquisition (as many scanners send them), so the latency
includes the completion decision from the slice stack (``series.confirm_s``); with
``--images-in-acquisition`` they carry it and the count completes the series.

Usage: .venv/bin/python -m bench.bench_ingest_to_report [--repeats 3] [--sizes 40 300]
       [--images-in-acquisition]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom

from tests.support.peers import DCMTK_ENV, Orthanc, free_port, port_open, start_orthanc, wait_until
from tests.support.phantoms import make_head_ct_series

ROOT = Path(__file__).resolve().parents[1]
SLICE_MM = {40: 2.5, 300: 0.625}


@dataclass
class Run:
    ingest_s: float
    stages: dict[str, float]


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


def _start_node(workdir: Path, orthanc: Orthanc) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    data_dir = workdir / "node"
    config = workdir / "hemex.toml"
    config.write_text(f"""
data_dir = "{data_dir}"
[dicom]
host = "127.0.0.1"
port = {port}
allowed_calling_ae_titles = ["STORESCU"]
[hl7]
enabled = false
[[destinations]]
name = "pacs"
ae_title = "{orthanc.ae_title}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
""")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "serve", "--config", str(config)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: port_open(port), timeout_s=120)
    return process, port, data_dir / "hemex.sqlite3"


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


def _delivered(db_path: Path, study_uid: str) -> bool:
    """The node has recorded the SR's delivery (it commits after Orthanc's success)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT o.delivered_at FROM outbox o JOIN results r ON o.item_key = r.sr_sop_uid"
                         " WHERE r.study_uid = ?", (study_uid,)).fetchone()
    return bool(row and row[0])


def _stages(db_path: Path, study_uid: str, sr_seen_at: float) -> dict[str, float]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        last_image = db.execute("SELECT MAX(received_at) FROM instances WHERE study_uid = ?", (study_uid,)).fetchone()[0]
        completed = db.execute("SELECT MAX(completed_at) FROM series WHERE study_uid = ?", (study_uid,)).fetchone()[0]
        result_at, summary_json, sr_uid = db.execute(
            "SELECT created_at, summary_json, sr_sop_uid FROM results WHERE study_uid = ?", (study_uid,)).fetchone()
        delivered = db.execute("SELECT delivered_at FROM outbox WHERE item_key = ?", (sr_uid,)).fetchone()[0]
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


def bench_size(slices: int, repeats: int, workdir: Path, orthanc: Orthanc, node_port: int, db_path: Path,
               storescp_port: int, images_in_acquisition: bool = False) -> tuple[list[float], list[Run]]:
    reference, runs = [], []
    for repeat in range(repeats):
        folder = workdir / f"ct{slices}-{repeat}"
        phantom = make_head_ct_series(folder, slices=slices, slice_mm=SLICE_MM[slices], seed=repeat,
                                      patient_id=f"BENCH-{slices}-{repeat}", accession=f"ACC-{slices}-{repeat}")
        if not images_in_acquisition:
            _drop_images_in_acquisition(phantom.paths)
        reference.append(_storescu(storescp_port, folder, "STORESCP"))
        ingest = _storescu(node_port, folder, "HEMEX")
        study_uid = phantom.study_uid
        wait_until(lambda: _sr_in_orthanc(orthanc, study_uid), timeout_s=1800, interval_s=0.1)  # noqa: B023
        seen_at = time.time()
        wait_until(lambda: _delivered(db_path, study_uid), timeout_s=60)  # noqa: B023 - called at once
        runs.append(Run(ingest, _stages(db_path, study_uid, seen_at)))
    return reference, runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 300], choices=sorted(SLICE_MM))
    parser.add_argument("--images-in-acquisition", action="store_true",
                        help="send Images in Acquisition (the count completes the series)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hemex-bench-") as tmp:
        workdir = Path(tmp)
        orthanc = start_orthanc(workdir / "orthanc")
        storescp, storescp_port = _start_storescp(workdir / "storescp")
        node, node_port, db_path = _start_node(workdir, orthanc)
        try:
            print(f"machine: {os.cpu_count()} CPUs; median of {args.repeats} runs; 512 x 512 slices")
            for slices in args.sizes:
                reference, runs = bench_size(slices, args.repeats, workdir, orthanc, node_port, db_path,
                                             storescp_port, args.images_in_acquisition)
                ref = statistics.median(reference)
                ingest = statistics.median(r.ingest_s for r in runs)
                print(f"\n== {slices}-slice series ==")
                print(f"ingest   storescp {slices / ref:7.1f} images/s   hemex {slices / ingest:7.1f} images/s"
                      f"   ratio hemex/storescp {ref / ingest:.2f}")
                print(f"{'stage':28s} {'seconds':>9s} {'x storescp ingest':>18s}")
                for stage in runs[0].stages:
                    seconds = statistics.median(r.stages[stage] for r in runs)
                    print(f"{stage:28s} {seconds:9.3f} {seconds / ref:18.2f}")
            print(f"\nnode peak RSS: {_peak_rss_mib(node.pid):.0f} MiB")
        finally:
            node.terminate()
            node.wait(60)
            storescp.terminate()
            orthanc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
