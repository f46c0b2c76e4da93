"""pynetdicom's own ceiling: a C-STORE SCP whose handler stores nothing.

The handler takes the received data set's bytes (as the node's does) and answers
Success; no decoding, no file, no database. Its rate is the most any receiver built on
pynetdicom's association and DUL reactor threads can reach on this machine, so the
benches print it beside dcmtk's storescp to show how much of the node's gap is the
toolkit's and how much the node's own work. Same AE settings as the node's listener.

Usage (the benches start it): .venv/bin/python -m bench.pynetdicom_ceiling --port N
"""

from __future__ import annotations

import argparse

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]


def _store(event: Event) -> int:
    event.request.DataSet.getvalue()  # type: ignore[union-attr]
    return 0x0000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    ae = AE(ae_title="HEMEX")
    ae.maximum_pdu_size = 0
    ae.maximum_associations = 16
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.start_server(("127.0.0.1", args.port), block=True, evt_handlers=[(evt.EVT_C_STORE, _store)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
