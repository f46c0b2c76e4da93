"""A PACS that counts: a pynetdicom C-STORE SCP that records every reception.

Orthanc silently overwrites an instance whose SOP Instance UID it already holds, so it
cannot tell whether the node sent something twice. This SCP answers 0x0000 to every
C-STORE and records each one (SOP Instance UID, SOP class, modality, study), duplicates
included, so a test can count receptions per SOP Instance UID.

In the test process: ``CountingPacs(...).start()`` and read ``receptions()``. In a
process of its own (so it outlives what it watches):
``python -m tests.support.counting_pacs --port P --record receptions.jsonl``; each
reception is appended to the file as a JSON line and fsynced before the success status
goes back, and ``read_receptions(path)`` reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

try:  # pynetdicom >= 2.1
    from pynetdicom import ALL_TRANSFER_SYNTAXES
except ImportError:  # pragma: no cover - older pynetdicom
    from pynetdicom.presentation import ALL_TRANSFER_SYNTAXES  # type: ignore[no-redef]

SUCCESS = 0x0000


@dataclass(frozen=True)
class Reception:
    """One C-STORE the PACS answered with success."""

    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    study_uid: str
    calling_ae_title: str
    received_at: float


class CountingPacs:
    """C-STORE SCP on 127.0.0.1 that keeps every reception, in order.

    Parameters
    ----------
    port
        TCP port on 127.0.0.1; 0 (the default) binds any free port, read back in ``port``.
    ae_title
        The AE title the node calls.
    record_path
        When given, each reception is also appended to this JSON-lines file and fsynced
        before the success status is returned.
    on_store
        Called with each reception before the success status goes back (a test looks at
        the sender's state at that moment).
    """

    def __init__(self, port: int = 0, ae_title: str = "COUNTPACS", record_path: Path | None = None,
                 on_store: Callable[[Reception], None] | None = None) -> None:
        self.port = port
        self.ae_title = ae_title
        self._record_path = record_path
        self._on_store = on_store
        self._lock = threading.Lock()
        self._receptions: list[Reception] = []
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> CountingPacs:
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_c_store)])
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_c_store(self, event: Event) -> int:
        """EVT_C_STORE: record the reception, then return 0x0000 (Success)."""
        ds = event.dataset
        reception = Reception(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            modality=str(ds.get("Modality", "")),
            study_uid=str(ds.get("StudyInstanceUID", "")),
            calling_ae_title=str(event.assoc.requestor.ae_title).strip(),
            received_at=time.time(),
        )
        with self._lock:
            self._receptions.append(reception)
            if self._record_path is not None:
                with open(self._record_path, "a", encoding="utf-8") as record:
                    record.write(json.dumps(asdict(reception)) + "\n")
                    record.flush()
                    os.fsync(record.fileno())
        if self._on_store is not None:
            self._on_store(reception)
        return SUCCESS

    def receptions(self) -> list[Reception]:
        """Every reception so far, in the order they arrived."""
        with self._lock:
            return list(self._receptions)


def read_receptions(path: Path) -> list[Reception]:
    """The receptions a ``--record`` PACS wrote (none when the file is absent)."""
    if not path.exists():
        return []
    return [Reception(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


def receptions_per_uid(receptions: list[Reception]) -> Counter[str]:
    """How many times each SOP Instance UID was received (1 = sent once)."""
    return Counter(r.sop_instance_uid for r in receptions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="counting C-STORE SCP on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ae-title", default="COUNTPACS")
    parser.add_argument("--record", type=Path, required=True, help="JSON-lines file of receptions")
    args = parser.parse_args(argv)
    CountingPacs(args.port, args.ae_title, args.record).start()
    threading.Event().wait()  # until killed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
