"""Analysis throughput with 1, 2 and 4 analysis workers on one PostgreSQL database, and the
database's share of the time from last image to SR, against one node on SQLite.

Each configuration receives the same synthetic studies first (a receive-only node, so
the studies wait complete in the job table), then starts its analysis workers and a
delivering node and times until every study's SR reached the PACS (a counting C-STORE
SCP). Throughput is the pipeline's steady rate, (studies - 1) over the seconds from the
first SR delivered to the last (node start-up, which the wall time of the phase also
holds and which grows with the number of nodes started, is left out of it), as a ratio
to the single node on SQLite measured in the same run. Then one study is sent to the running configuration
and its last-image-to-SR latency is split into the seconds the nodes spent in SQL
statements (``hemex_database_statement_seconds`` from their /metrics) and the rest.

All processes share this machine's cores (2 here): more workers than cores cannot
scale; the figures say how close to the cores' limit it comes and what the database
costs. On a GPU host run one analysis worker per GPU.

Usage: .venv/bin/python -m bench.bench_cluster [--studies 8] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.support.counting_pacs import CountingPacs
from tests.support.node_process import (
    NodeConfig,
    NodeDatabase,
    NodeProcess,
    Scanner,
    write_node_config,
)
from tests.support.peers import wait_until
from tests.support.phantoms import PhantomSeries, make_head_ct_series
from tests.support.postgres import PASSWORD, PostgresServer


def _studies(folder: Path, count: int) -> list[PhantomSeries]:
    return [make_head_ct_series(folder / f"ct{i}", slices=40, rows=128, pixel_mm=230.0 / 128, seed=i,
                                patient_id=f"BC-{i:03d}", accession=f"BC-{i:03d}") for i in range(count)]


def _statement_seconds(config: NodeConfig) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{config.metrics_port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("hemex_database_statement_seconds_total "):
                return float(line.split()[1])
    return 0.0


class Cluster:
    """One configuration: a receiver, ``workers`` analysis nodes, a deliverer (or one
    ``all`` node on SQLite when ``workers`` is 0)."""

    def __init__(self, work: Path, pacs: CountingPacs, workers: int) -> None:
        self.work, self.pacs = work, pacs
        single = workers == 0
        shared = work / "shared-data"

        def node(name: str, roles: tuple[str, ...]) -> NodeProcess:
            config = write_node_config(work / name, pacs.port, pacs.ae_title, quiet_period_s=1.0,
                                       data_dir=shared, node_name=None if single else name, roles=roles)
            return NodeProcess(config, work / f"{name}.out")

        self.single = single
        # Every configuration receives with a receive-only node first, so that no study is
        # analysed before the timed phase; on SQLite it then stops and one "all" node
        # takes over (one process per SQLite file), which also receives the latency study.
        self.receiver = node("receiver", ("receive",))
        self.others = [node("single", ("all",))] if single else [
            node(f"worker{i}", ("analyse",)) for i in range(workers)] + [node("deliverer", ("deliver",))]
        self.entry = self.others[0] if single else self.receiver
        self.db = NodeDatabase(shared)

    def nodes(self) -> list[NodeProcess]:
        return [self.receiver, *self.others]

    def receive(self, studies: list[PhantomSeries]) -> None:
        """Every study received and complete, nothing analysed yet; on SQLite the receiver
        then stops for the single node."""
        self.receiver.start()
        scanner = Scanner(self.receiver.config.dicom_port)
        scanner.send_in_background([p for s in studies for p in s.paths])
        scanner.wait(timeout_s=600)
        wait_until(lambda: self.db.count("SELECT COUNT(*) FROM series WHERE state = 'complete'") == len(studies),
                   timeout_s=120, interval_s=0.2)
        if self.single:
            self.receiver.stop()

    def analyse(self, studies: int) -> tuple[float, float]:
        """(seconds from starting the nodes until every study's SR is in the PACS, seconds
        from the first SR delivered to the last)."""
        start = time.monotonic()
        for node in self.others:
            node.start()
        delivered_sql = ("SELECT o.delivered_at FROM outbox o JOIN results r ON o.item_key = r.sr_sop_uid"
                         " WHERE o.state = 'delivered' ORDER BY o.delivered_at")
        wait_until(lambda: len(self.db.rows(delivered_sql)) >= studies, timeout_s=1800, interval_s=0.2)
        wall = time.monotonic() - start
        delivered = [row[0] for row in self.db.rows(delivered_sql)]
        return wall, delivered[-1] - delivered[0]

    def latency(self, study: PhantomSeries) -> tuple[float, float]:
        """(seconds from last image to SR delivered, seconds the nodes spent in SQL)."""
        running = [n for n in self.nodes() if n.running]
        before = sum(_statement_seconds(n.config) for n in running)
        scanner = Scanner(self.entry.config.dicom_port)
        scanner.send_in_background(study.paths)
        scanner.wait()
        last_image = time.monotonic()
        wait_until(lambda: self.db.count(
            "SELECT COUNT(*) FROM outbox o JOIN results r ON o.item_key = r.sr_sop_uid"
            f" WHERE r.study_uid = '{study.study_uid}' AND o.state = 'delivered'") == 1,
            timeout_s=300, interval_s=0.05)
        total = time.monotonic() - last_image
        return total, sum(_statement_seconds(n.config) for n in running) - before

    def stop(self) -> None:
        for node in self.nodes():
            if node.running:
                node.stop()


def run(studies: int, worker_counts: list[int], work: Path) -> list[tuple[str, float, float, float, float]]:
    phantoms = _studies(work / "ct", studies + 1)
    server = PostgresServer.start()
    rows = []
    try:
        for workers in [0, *worker_counts]:
            if workers:
                os.environ["HEMEX_DATABASE__URL"] = server.create_database()
                os.environ["HEMEX_DATABASE__PASSWORD"] = PASSWORD
            else:
                os.environ.pop("HEMEX_DATABASE__URL", None)
            pacs = CountingPacs().start()
            cluster = Cluster(work / f"run{workers}", pacs, workers)
            try:
                cluster.receive(phantoms[:studies])
                wall, spread = cluster.analyse(studies)
                latency, sql = cluster.latency(phantoms[studies])
            finally:
                cluster.stop()
                pacs.stop()
            label = "1 node, SQLite" if workers == 0 else f"{workers} analysis worker(s), PostgreSQL"
            rows.append((label, wall, (studies - 1) / spread, latency, sql))
    finally:
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.studies, [int(w) for w in args.workers.split(",")], Path(tmp))
    reference = rows[0][2]
    print(f"{args.studies} studies of 40 slices 128 x 128; {os.cpu_count()} CPUs")
    print("configuration | phase wall s (with node start-up) | steady studies/s | ratio to 1 node SQLite |"
          " last image -> SR s | SQL s in it | SQL share")
    for label, wall, rate, latency, sql in rows:
        print(f"{label} | {wall:.1f} | {rate:.3f} | {rate / reference:.2f} | {latency:.2f} | {sql:.3f} |"
              f" {sql / latency:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
