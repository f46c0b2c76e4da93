"""DICOM C-STORE SCU channel: sends a batch of stored objects over ONE association.

Statuses (PS3.4 B.2.3, PS3.7 C) map onto the outbox's error contract:
success and warnings (0x0000, 0x0001, 0xB000, 0xB006, 0xB007) and 0x0111 (the PACS holds
that SOP Instance already) -> delivered; association rejected/aborted, timeouts,
connection errors, out of resources (0xA7xx), processing failure (0x0110), resource
limitation (0x0213) and unknown codes -> ``DeliveryError`` (retried); SOP class not
supported (0x0122), not authorised (0x0124), data set does not match the SOP class
(0xA9xx), cannot understand (0xCxxx), invalid object or attributes, or no accepted
presentation context -> ``PermanentDeliveryError`` (dead letter).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from daemon.config import DicomDestination, Settings
from daemon.deliver.channel import Outcome, OutcomeCallback
from domain.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)

DELIVERED_STATUSES = frozenset({0x0000, 0x0001, 0xB000, 0xB006, 0xB007,
                                0x0111})  # 0x0111: duplicate SOP Instance, already held
PERMANENT_STATUSES = frozenset({0x0105, 0x0106, 0x0117, 0x0118, 0x0119, 0x0120, 0x0121, 0x0122, 0x0124})
MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts per association


def _is_permanent(code: int) -> bool:
    return code in PERMANENT_STATUSES or 0xA900 <= code <= 0xA9FF or 0xC000 <= code <= 0xCFFF


def _application_entity(destination: DicomDestination) -> AE:
    ae = AE(ae_title=destination.calling_ae_title)
    # Every network step is bounded, so a hung PACS cannot stall the outbox.
    ae.acse_timeout = destination.timeout_s
    ae.dimse_timeout = destination.timeout_s
    ae.network_timeout = destination.timeout_s
    ae.connection_timeout = destination.timeout_s
    return ae


def _transfer_syntaxes(file_syntax: str | None) -> list[str]:
    syntaxes = [str(file_syntax)] if file_syntax else []
    for uid in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        if uid not in syntaxes:
            syntaxes.append(uid)
    return syntaxes


class DicomStoreChannel:
    """``DeliveryChannel`` for the configured DICOM destinations, looked up by name."""

    def __init__(self, destinations: Sequence[DicomDestination]) -> None:
        self._destinations = {d.name: d for d in destinations}

    def send_batch(self, destination: str, paths: Sequence[Path],
                   on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        """Send ``paths`` to ``destination`` over one association; ``on_outcome(index,
        outcome)`` hears of each C-STORE's outcome before the next object is sent.

        Raises
        ------
        DeliveryError
            The association could not be established: nothing was sent.
        """
        target = self._destinations.get(destination)
        if target is None:
            return [PermanentDeliveryError(f"no DICOM destination named {destination!r}")] * len(paths)
        outcomes: list[Outcome] = [None] * len(paths)
        datasets: dict[int, pydicom.Dataset] = {}
        for index, path in enumerate(paths):
            try:
                ds = pydicom.dcmread(path)
            except (InvalidDicomError, OSError, ValueError) as exc:
                outcomes[index] = PermanentDeliveryError(f"{Path(path).name} is not readable DICOM: {exc}")
                continue
            if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
                outcomes[index] = PermanentDeliveryError(f"{Path(path).name} has no SOP Class/Instance UID")
                continue
            datasets[index] = ds
        if not datasets:
            return outcomes

        ae = _application_entity(target)
        contexts = {(str(ds.SOPClassUID), str(ds.file_meta.get("TransferSyntaxUID", "")) or None)
                    for ds in datasets.values()}
        if len(contexts) > MAX_CONTEXTS:
            raise DeliveryError(f"batch needs {len(contexts)} presentation contexts, more than {MAX_CONTEXTS}")
        for sop_class, syntax in sorted(contexts, key=lambda c: (c[0], c[1] or "")):
            ae.add_requested_context(sop_class, _transfer_syntaxes(syntax))

        started = time.monotonic()
        assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            raise DeliveryError(f"association with {destination} ({target.ae_title}@{target.host}:{target.port})"
                                f" {why}")
        try:
            for index, dataset in datasets.items():
                outcomes[index] = self._store(assoc, destination, dataset)
                if on_outcome is not None:
                    on_outcome(index, outcomes[index])
        finally:
            if assoc.is_established:
                assoc.release()
        sent = sum(1 for outcome in outcomes if outcome is None)
        log.info("dicom batch destination=%s sent=%d failed=%d seconds=%.3f", destination, sent,
                 len(paths) - sent, time.monotonic() - started)
        return outcomes

    @staticmethod
    def _store(assoc: Association, destination: str, ds: pydicom.Dataset) -> Outcome:
        if not assoc.is_established:
            return DeliveryError(f"association with {destination} ended before this object was sent")
        sop_class = str(ds.SOPClassUID)
        if not any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts):
            return PermanentDeliveryError(f"{destination} accepts no presentation context for SOP class {sop_class}")
        try:
            status = assoc.send_c_store(ds)
        except ValueError as exc:  # no accepted context for the data set's transfer syntax
            return PermanentDeliveryError(f"{destination} cannot take this object: {exc}")
        if "Status" not in status:
            return DeliveryError(f"no C-STORE response from {destination} (timeout or abort)")
        code = int(status.Status)
        if code in DELIVERED_STATUSES:
            if code != 0x0000:
                log.warning("dicom stored with warning destination=%s status=0x%04X", destination, code)
            return None
        if _is_permanent(code):
            return PermanentDeliveryError(f"{destination} refused SOP class {sop_class}: status 0x{code:04X}")
        return DeliveryError(f"{destination} failed the C-STORE: status 0x{code:04X}")


def echo_destination(settings: Settings, name: str) -> bool:
    """C-ECHO the destination called ``name``; True when it answered success."""
    matches = [d for d in settings.destinations if d.name == name]
    if not matches:
        raise KeyError(f"no destination named {name!r}")
    ae = _application_entity(matches[0])
    ae.add_requested_context(Verification)
    assoc = ae.associate(matches[0].host, matches[0].port, ae_title=matches[0].ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    return "Status" in status and int(status.Status) == 0x0000
