"""kill -9 nodes of a two-node cluster at random while a scanner sends; count what survived.

Two `hemex serve` nodes (both ``--role all``, as a small site runs them behind a load
balancer) share one real PostgreSQL server (started here in a temporary folder, from
Debian's packages) and one data directory. dcmtk storescu sends each synthetic study
half to one node and half to the other; a counting C-STORE SCP is the PACS. At random
moments a random node is killed with kill -9 and restarted a little later. A last run
without kills lets everything finish; then:

- every instance storescu saw acknowledged (by either node) is in the database and its
  file decodes;
- every study has exactly one result, and the PACS received exactly one SR and one SEG
  (by distinct SOP Instance UID) per study;
- C-STORE receptions per SOP Instance UID are counted (a re-send of one UID can follow
  a kill between the PACS's success and the outbox commit: at-least-once).

Usage: .venv/bin/python -m bench.kill_loop_cluster [--kills 10] [--studies 6] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from tests.support.counting_pacs import CountingPacs, receptions_per_uid
from tests.support.node_process import NodeDatabase, NodeProcess, Scanner, write_node_config
from tests.support.peers import wait_until
from tests.support.phantoms import PhantomSeries, make_head_ct_series
from tests.support.postgres import PASSWORD, PostgresServer

LEASE_S = 10.0


@dataclass
class ClusterTally:
    kills: int = 0
    killed: Counter[str] = field(default_factory=Counter)
    acknowledged: set[Path] = field(default_factory=set)
    lost: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    studies: int = 0
    results_per_study: Counter[str] = field(default_factory=Counter)
    sr_per_study: dict[str, set[str]] = field(default_factory=dict)
    seg_per_study: dict[str, set[str]] = field(default_factory=dict)
    receptions: Counter[str] = field(default_factory=Counter)
    failed_jobs: int = 0
    dead_letters: int = 0
    seconds: float = 0.0

    def failures(self) -> list[str]:
        problems = []
        if self.lost or self.unreadable:
            problems.append(f"lost {len(self.lost)}, unreadable {len(self.unreadable)}")
        if any(n != 1 for n in self.results_per_study.values()) or len(self.results_per_study) != self.studies:
            problems.append(f"results per study {dict(self.results_per_study)}")
        for name, per_study in (("SR", self.sr_per_study), ("SEG", self.seg_per_study)):
            if len(per_study) != self.studies or any(len(uids) != 1 for uids in per_study.values()):
                problems.append(f"{name} per study {Counter(len(u) for u in per_study.values())}")
        if self.failed_jobs or self.dead_letters:
            problems.append(f"failed jobs {self.failed_jobs}, dead letters {self.dead_letters}")
        return problems

    def figures(self) -> str:
        return (f"kills={self.kills} killed={dict(self.killed)} acknowledged={len(self.acknowledged)} "
                f"lost={len(self.lost)} unreadable={len(self.unreadable)} studies={self.studies} "
                f"results_per_study={dict(Counter(self.results_per_study.values()))} "
                f"sr_per_study={dict(Counter(len(u) for u in self.sr_per_study.values()))} "
                f"seg_per_study={dict(Counter(len(u) for u in self.seg_per_study.values()))} "
                f"pacs_receptions={sum(self.receptions.values())} distinct_uids={len(self.receptions)} "
                f"failed_jobs={self.failed_jobs} dead_letters={self.dead_letters} seconds={self.seconds:.1f}")


def _send_split(study: PhantomSeries, ports: list[int], acknowledged: set[Path]) -> None:
    """Half of the study to each node, as a load balancer spreads associations."""
    half = len(study.paths) // 2
    for port, files in zip(ports, (study.paths[:half], study.paths[half:])):
        scanner = Scanner(port)
        scanner.acknowledged |= acknowledged
        scanner.send_in_background(files)
        scanner.wait()
        acknowledged |= scanner.acknowledged


def kill_loop(kills: int, studies: int, seed: int, work: Path) -> ClusterTally:
    """Send ``studies`` studies across two nodes while killing nodes ``kills`` times."""
    rng = random.Random(seed)
    start = time.monotonic()
    server = PostgresServer.start()
    pacs = CountingPacs().start()
    os.environ["HEMEX_DATABASE__URL"] = server.create_database()
    os.environ["HEMEX_DATABASE__PASSWORD"] = PASSWORD
    tally = ClusterTally(studies=studies)
    phantoms = [make_head_ct_series(work / f"ct{i}", slices=24, rows=64, pixel_mm=230.0 / 64, seed=seed + i,
                                    patient_id=f"CLK-{i:03d}", accession=f"CLK-{i:03d}") for i in range(studies)]
    nodes = {}
    for name in ("node-a", "node-b"):
        config = write_node_config(work / name, pacs.port, pacs.ae_title, quiet_period_s=2.0,
                                   data_dir=work / "shared-data", node_name=name, lease_s=LEASE_S)
        nodes[name] = NodeProcess(config, work / f"{name}.out")
    db = NodeDatabase(work / "shared-data")
    try:
        for node in nodes.values():
            node.start()
        ports = [node.config.dicom_port for node in nodes.values()]
        for index, study in enumerate(phantoms):
            _send_split(study, ports, tally.acknowledged)
            if index < kills:
                time.sleep(rng.uniform(0.0, 3.0))  # into completion, analysis or delivery
                victim = rng.choice(sorted(nodes))
                nodes[victim].kill()
                tally.kills += 1
                tally.killed[victim] += 1
                time.sleep(rng.uniform(0.0, 2.0))
                nodes[victim].start()
        wait_until(lambda: db.count("SELECT COUNT(DISTINCT study_uid) FROM results") == studies
                   and db.count("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')") == 0
                   and db.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'") == 0,
                   timeout_s=120 + 30 * studies, interval_s=0.5)
    finally:
        for node in nodes.values():
            if node.running:
                node.stop()
        pacs.stop()
    stored = dict(db.rows("SELECT sop_instance_uid, path FROM instances"))
    for path in tally.acknowledged:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        if uid not in stored:
            tally.lost.append(uid)
            continue
        try:
            pydicom.dcmread(stored[uid]).pixel_array  # noqa: B018 - decoding is the check
        except (OSError, ValueError, pydicom.errors.InvalidDicomError):
            tally.unreadable.append(uid)
    tally.results_per_study = Counter(row[0] for row in db.rows("SELECT study_uid FROM results"))
    receptions = pacs.receptions()
    tally.receptions = receptions_per_uid(receptions)
    for reception in receptions:
        per_study = {"SR": tally.sr_per_study, "SEG": tally.seg_per_study}.get(reception.modality)
        if per_study is not None:
            per_study.setdefault(reception.study_uid, set()).add(reception.sop_instance_uid)
    tally.failed_jobs = db.count("SELECT COUNT(*) FROM jobs WHERE state = 'failed'")
    tally.dead_letters = db.count("SELECT COUNT(*) FROM outbox WHERE state = 'dead'")
    server.stop()
    tally.seconds = time.monotonic() - start
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tally = kill_loop(args.kills, max(args.studies, args.kills), args.seed, Path(tmp))
    print(tally.figures())
    problems = tally.failures()
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
