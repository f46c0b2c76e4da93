"""Real network peers for tests, on 127.0.0.1 with free ports and readiness polling."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ORTHANC_BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
# Debian's dcmtk leaves Nagle's algorithm on unless TCP_NODELAY=1: each C-STORE then waits
# ~40 ms for a delayed ACK (storescp took 1.9 s for 40 images instead of 0.08 s). Benches
# run dcmtk peers with it, so a reference is dcmtk at its best.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (released again: a peer that cannot bind
    port 0 and report it, e.g. Orthanc or a node in another process, takes it next and
    is retried if another process was faster).

    Never the same port twice in one process: the kernel may hand a just-released port
    out again, and one node's DICOM, HL7 and metrics ports are asked for in a row.
    """
    with _HANDED_OUT_LOCK:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing answers on for as long as the block runs: it is bound but
    never listened on, so connecting is refused and no other process can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0, interval_s: float = 0.1) -> None:
    """Poll ``predicate`` until it is true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Orthanc:
    """A real Orthanc PACS started for a test, with its REST API for assertions."""

    process: subprocess.Popen
    dicom_port: int
    http_port: int
    ae_title: str
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.read()

    def instances(self) -> list[str]:
        return list(self.get("/instances"))  # type: ignore[arg-type]

    def instance_tags(self, orthanc_id: str) -> dict:
        return self.get(f"/instances/{orthanc_id}/simplified-tags")  # type: ignore[return-value]

    def stop(self) -> None:
        """Kill it: its storage is the test's and is thrown away, and Orthanc's orderly
        stop waits about 3.5 s for the polling loops of its HTTP and DICOM servers."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_orthanc(workdir: Path, ae_title: str = "ORTHANC", dicom_port: int | None = None,
                  known_peers: dict[str, tuple[str, int]] | None = None) -> Orthanc:
    """Start Orthanc on loopback ports; accepts any calling AE (a permissive PACS).

    Orthanc cannot bind port 0 and report it, so it gets free ports picked here; when
    another process took one in between, it is started again on new ones.
    """
    for attempt in range(3):
        try:
            return _start_orthanc(workdir / f"run{attempt}" if attempt else workdir, ae_title, dicom_port,
                                  known_peers)
        except _PortTaken:
            if dicom_port is not None:
                raise AssertionError(f"Orthanc could not bind its DICOM port {dicom_port}") from None
    raise AssertionError("Orthanc found no free ports in three tries")


class _PortTaken(Exception):
    pass


def _start_orthanc(workdir: Path, ae_title: str, dicom_port: int | None,
                   known_peers: dict[str, tuple[str, int]] | None) -> Orthanc:
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port = dicom_port or free_port()
    http_port = free_port()
    config = {
        "Name": "hemex-test-pacs",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {name: [name, host, port] for name, (host, port) in (known_peers or {}).items()},
        "Plugins": [],
        "StableAge": 1,
        "LoadPrivateDictionary": False,
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    with open(workdir / "orthanc.log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen([ORTHANC_BINARY, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    orthanc = Orthanc(process, dicom_port, http_port, ae_title, workdir)
    try:
        wait_until(lambda: process.poll() is not None or (port_open(http_port) and port_open(dicom_port)),
                   timeout_s=60)
    except AssertionError:
        orthanc.stop()
        raise AssertionError("Orthanc did not start: " + (workdir / "orthanc.log").read_text()[-2000:]) from None
    if process.poll() is not None:
        log_tail = (workdir / "orthanc.log").read_text()[-2000:]
        if "address already in use" in log_tail.lower() or "cannot bind" in log_tail.lower():
            raise _PortTaken()
        raise AssertionError("Orthanc exited at start: " + log_tail)
    return orthanc
