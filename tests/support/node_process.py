"""The whole node as a separate process (`hemex serve --config`), and the peers that feed it.

``write_node_config`` writes a TOML config into a work folder (data dir there, DICOM,
HL7 and metrics on free loopback ports, one DICOM destination, optionally an alert
webhook). ``NodeProcess`` starts ``hemex serve`` on it and waits until its DICOM port
answers; ``kill()`` is kill -9, ``stop()`` is SIGTERM. ``Scanner`` is
dcmtk storescu and remembers which files got a Success response; ``Hl7Sender`` sends ADT
messages over MLLP and remembers which got AA. ``NodeDatabase`` reads the node's SQLite
file read-only, so it neither recovers nor checkpoints the WAL of a killed node (the
node itself must do that at its next start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from tests.support.hl7_peers import MllpClient, adt, msa
from tests.support.peers import free_port, port_open, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNER_AE, NODE_AE = "STORESCU", "HEMEX"


def hemex_command() -> list[str]:
    """The installed console script next to this interpreter, else the same entry point."""
    script = Path(sys.executable).with_name("hemex")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "daemon.cli"]


@dataclass(frozen=True)
class NodeConfig:
    """What the config file says, as the peers need it."""

    path: Path
    data_dir: Path
    dicom_port: int
    hl7_port: int
    metrics_port: int
    roles: tuple[str, ...] = ("all",)

    @property
    def receives(self) -> bool:
        return bool({"receive", "all"} & set(self.roles))


def write_node_config(work: Path, pacs_port: int, pacs_ae_title: str, *, webhook_url: str | None = None,
                      quiet_period_s: float = 20.0, validate_reports: bool = False, data_dir: Path | None = None,
                      node_name: str | None = None, roles: tuple[str, ...] = ("all",),
                      lease_s: float = 60.0, study_settle_s: float = 10.0) -> NodeConfig:
    """Write ``work/hemex.toml`` for a node whose data dir is ``work/data`` (or ``data_dir``,
    which several nodes on one PostgreSQL database share).

    ``wait_for_clinical_s = 0`` makes the first report the final one (no preliminary
    report that a second, final one would supersede), so each study gets exactly one SR
    and one SEG. The disk-space floors are 0 so a nearly full /tmp does not refuse input.
    The database is the environment's (``HEMEX_DATABASE__URL`` on the PostgreSQL pass),
    else the SQLite file in the data dir.
    """
    work.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or work / "data"
    dicom_port, hl7_port, metrics_port = free_port(), free_port(), free_port()
    cluster = f'\n[cluster]\nnode_name = "{node_name}"\nlease_s = {lease_s}\n' if node_name else ""
    # include_identifiers = "all": the kill loop tells the studies' alerts apart by Study Instance UID.
    alerts = (f'\n[alerts]\nmin_volume_ml = 10.0\ninclude_identifiers = "all"\n\n[[alerts.webhooks]]\n'
              f'name = "oncall"\nurl = "{webhook_url}"\ntimeout_s = 5.0\n') if webhook_url else ""
    text = f"""data_dir = "{data_dir}"

[dicom]
host = "127.0.0.1"
port = {dicom_port}
ae_title = "{NODE_AE}"
allowed_calling_ae_titles = ["{SCANNER_AE}"]
min_free_disk_mb = 0

[series]
quiet_period_s = {quiet_period_s}
study_settle_s = {study_settle_s}

[hl7]
host = "127.0.0.1"
port = {hl7_port}
wait_for_clinical_s = 0.0
min_free_disk_mb = 0

[report]
validate_with_dicom3tools = {"true" if validate_reports else "false"}

[metrics]
port = {metrics_port}

[outbox]
poll_interval_s = 0.5
retry_initial_s = 0.5
retry_max_s = 2.0

[[destinations]]
name = "pacs"
ae_title = "{pacs_ae_title}"
host = "127.0.0.1"
port = {pacs_port}
timeout_s = 10.0
{alerts}{cluster}"""
    path = work / "hemex.toml"
    path.write_text(text, encoding="utf-8")
    return NodeConfig(path, data_dir, dicom_port, hl7_port, metrics_port, roles)


class NodeProcess:
    """``hemex serve --config`` in a child process; its output goes to ``work/node.out``."""

    def __init__(self, config: NodeConfig, output: Path) -> None:
        self.config = config
        self._output = output
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the node and wait until its DICOM listener answers (it opens after the
        node resumed unfinished jobs and series)."""
        # PYTHONFAULTHANDLER: a node that hangs on stop is sent SIGABRT and prints every
        # thread's stack into its output before it dies.
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        with open(self._output, "ab") as out:  # the child keeps its own descriptor
            roles = [arg for role in self.config.roles for arg in ("--role", role)]
            self._proc = subprocess.Popen([*hemex_command(), "serve", "--config", str(self.config.path), *roles],
                                          cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        proc = self._proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"hemex serve exited with {proc.returncode}: {self.output_tail()}")
            # The DICOM port opens once the node resumed its work; a node that does not
            # receive answers /healthz when it is up.
            return port_open(self.config.dicom_port if self.config.receives else self.config.metrics_port)

        wait_until(ready, timeout_s=timeout_s, interval_s=0.05)

    def kill(self) -> None:
        """kill -9: no handler, no flush, no clean shutdown."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._proc = None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait for the clean stop; returns the exit status (negative: the
        signal that ended it; -6 when it hung and was aborted with its stacks printed)."""
        if self._proc is None:
            return 0
        self._proc.send_signal(signal.SIGTERM)
        try:
            code = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.send_signal(signal.SIGABRT)
            try:
                code = self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
        self._proc = None
        return code

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output_tail(self, chars: int = 3000) -> str:
        return self._output.read_text(errors="replace")[-chars:] if self._output.exists() else ""


class NodeDatabase:
    """Read-only queries on the node's database, from outside the node.

    The SQLite file is opened read-only, one connection per query, so that the reader
    neither recovers nor checkpoints the WAL of a killed node (the node itself must do
    that at its next start). On the PostgreSQL pass it reads the test's database.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "hemex.sqlite3"
        url = os.environ.get("HEMEX_DATABASE__URL")
        if url:
            password = os.environ.get("HEMEX_DATABASE__PASSWORD")
            # One pooled connection: polling every 10 ms must not fork a server backend
            # (and authenticate) per query.
            self._engine: Engine | None = create_engine(make_url(url).set(password=password), pool_size=1,
                                                        max_overflow=2, pool_pre_ping=True)
        else:
            self._engine = None

    def rows(self, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
        """The rows of ``sql`` (named parameters, ``:name``, from ``params``)."""
        if self._engine is None:
            if not self.path.exists():
                return []
            engine = create_engine(f"sqlite:///file:{self.path}?mode=ro&uri=true", poolclass=NullPool,
                                   connect_args={"timeout": 30})
        else:
            engine = self._engine
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params or {})]

    def count(self, sql: str, params: dict[str, object] | None = None) -> int:
        rows = self.rows(sql, params)
        return int(rows[0][0]) if rows else 0


@dataclass
class Scanner:
    """dcmtk storescu as the scanner; a file counts as acknowledged after a Success response."""

    port: int
    acknowledged: set[Path] = field(default_factory=set)
    runs: int = 0
    _proc: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None

    def send_in_background(self, files: Sequence[Path]) -> None:
        """Start one storescu association for ``files`` (those not yet acknowledged)."""
        todo = [f for f in files if f not in self.acknowledged]
        if not todo:
            return
        self._proc = subprocess.Popen(
            ["storescu", "-v", "-aet", SCANNER_AE, "-aec", NODE_AE, "-to", "10", "-ta", "10", "-td", "30",
             "127.0.0.1", str(self.port), *map(str, todo)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.runs += 1
        self._thread = threading.Thread(target=self._collect, args=(self._proc,), daemon=True)
        self._thread.start()

    @property
    def sending(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout_s: float = 120.0) -> None:
        """Wait for the running storescu (if any) to end and its acknowledgements to be read."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError("storescu did not end")
        self._thread = self._proc = None

    def _collect(self, proc: subprocess.Popen[str]) -> None:
        # storescu -v logs "Sending file: X" then "Received Store Response (Success)" per file.
        _, log = proc.communicate()
        current: Path | None = None
        for line in log.splitlines():
            if line.startswith("I: Sending file: "):
                current = Path(line[len("I: Sending file: "):].strip())
            elif "Received Store Response (Success)" in line and current is not None:
                self.acknowledged.add(current)
                current = None


@dataclass
class Hl7Sender:
    """Sends made-up ADT^A01 messages over MLLP; a control id counts once it got AA."""

    port: int
    acknowledged: set[str] = field(default_factory=set)
    _thread: threading.Thread | None = None

    def send_in_background(self, control_ids: Sequence[str]) -> None:
        todo = [c for c in control_ids if c not in self.acknowledged]
        self._thread = threading.Thread(target=self._send, args=(todo,), daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float = 60.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread = None

    def _send(self, control_ids: list[str]) -> None:
        try:
            with MllpClient(self.port, timeout_s=10.0) as client:
                for control_id in control_ids:
                    ack = client.send(adt(control_id, patient_id=f"KILL-{control_id}"))
                    if msa(ack)[1] == "AA":
                        self.acknowledged.add(control_id)
        except (OSError, ConnectionError):
            return  # the node was killed mid-conversation; the rest is sent again later
