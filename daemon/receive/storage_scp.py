"""The DICOM listener: C-STORE and C-ECHO SCP for CT images (pynetdicom).

The handlers only decode the header, persist, and return a status; all analysis
happens later, elsewhere (STYLE.md practice 1).

Who may do what: any calling AE title may associate and C-ECHO, because a PACS or
network administrator checks a route with ``echoscu`` from whatever AE title their tool
has; only the AE titles in ``dicom.allowed_calling_ae_titles`` may store. A C-STORE from
any other is refused with 0x0124 (Refused: Not Authorised), logged with the setting to
change and recorded in the audit log. pynetdicom's ``require_calling_aet`` would reject
the whole association instead, so an echo from an unlisted AE would fail for a reason
its user cannot see.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from functools import partial
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.dsutils import decode
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from daemon.audit_log import AuditLog
from daemon.config import DicomListenerSettings
from daemon.receive.instance_header import read_instance_header
from daemon.receive.instance_store import InstanceStore
from daemon.receive.part10 import part10_header
from daemon.tls import server_context
from domain.errors import InvalidInputError, StorageFullError
from domain.handles import study_handle
from domain.study import CT_STORAGE_SOP_CLASSES, ReceivedInstance

log = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 Annex B.2.3)
STATUS_SUCCESS = 0x0000
STATUS_NOT_AUTHORISED = 0x0124  # general DIMSE status, PS3.7 Annex C
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000

ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
]
# What pydicom raises on damaged bytes while it decodes a received dataset (found by
# bench/fuzz_parsers.py). They are caught around that one call only (``_decoded``): the
# node's own code after it raises InvalidInputError or nothing, and anything else is a
# bug that pynetdicom logs with its traceback (status 0xC211), not a refusal.
_PYDICOM_DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, KeyError, EOFError, OSError, AttributeError,
    NotImplementedError, struct.error, BytesLengthException,
)


@dataclass(frozen=True)
class ReceivedObject:
    """One C-STORE request's data set as it arrived, with who sent it."""

    dataset_bytes: bytes  # encoded in ``transfer_syntax``, no file meta
    transfer_syntax: str
    affected_sop_class: str
    calling_ae: str
    peer: str


def may_store(calling_ae: str, settings: DicomListenerSettings) -> bool:
    """Whether ``calling_ae`` may C-STORE (an empty allow-list lets every AE title store)."""
    allowed = settings.allowed_calling_ae_titles
    return not allowed or calling_ae.strip() in {title.strip() for title in allowed}


def handle_store(event: Event, store: InstanceStore, settings: DicomListenerSettings, audit: AuditLog) -> int:
    """EVT_C_STORE: spool the instance durably, then return its status (``receive_instance``).

    0x0124 (Refused: Not Authorised) when the calling AE title may not store
    (``may_store``), before anything is decoded.
    """
    requestor = event.assoc.requestor
    if not may_store(requestor.ae_title, settings):
        peer = f"{requestor.address}:{requestor.port}"
        log.warning("c-store refused calling_ae=%s peer=%s reason=calling AE title not in"
                    " dicom.allowed_calling_ae_titles status=0x0124", requestor.ae_title, requestor.address)
        audit.record("dicom-store-refused", calling_ae=requestor.ae_title, peer=peer,
                     reason="calling AE title not in dicom.allowed_calling_ae_titles",
                     sop_instance_uid=str(getattr(event.request, "AffectedSOPInstanceUID", "")))
        return STATUS_NOT_AUTHORISED
    received = ReceivedObject(
        dataset_bytes=event.request.DataSet.getvalue(),  # type: ignore[union-attr]
        transfer_syntax=str(event.context.transfer_syntax),
        affected_sop_class=str(event.request.AffectedSOPClassUID),
        calling_ae=requestor.ae_title, peer=f"{requestor.address}:{requestor.port}")
    return receive_instance(received, store, settings, audit)


def receive_instance(received: ReceivedObject, store: InstanceStore, settings: DicomListenerSettings,
                     audit: AuditLog) -> int:
    """Check one received object, spool it durably and record it; its C-STORE status.

    Returns 0x0000 once the file is stored and recorded as ``dicom.durability`` says
    (``InstanceStore``; also for a duplicate),
    0xA700 when the object is larger than ``max_instance_bytes`` or the disk is full,
    0xA900 when the dataset is not a CT image of the SOP class it was sent as, and
    0xC000 when it cannot be decoded or lacks its identifying UIDs. The file written is
    the bytes as sent behind a file meta header, never a re-encoding.
    """
    calling_ae = received.calling_ae
    if len(received.dataset_bytes) > settings.max_instance_bytes:
        log.warning("c-store rejected calling_ae=%s reason=object too large bytes=%d status=0xA700", calling_ae,
                    len(received.dataset_bytes))
        return STATUS_OUT_OF_RESOURCES
    try:
        ds = _decoded(received)
        header = read_instance_header(ds)
        _check_native_pixel_length(ds, UID(received.transfer_syntax))
    except InvalidInputError as exc:
        log.warning("c-store rejected calling_ae=%s reason=%s status=0xC000", calling_ae, exc)
        return STATUS_CANNOT_UNDERSTAND
    if header.sop_class_uid != received.affected_sop_class or header.modality != "CT":
        log.warning(
            "c-store rejected study=%s calling_ae=%s reason=not a CT image (modality=%s) status=0xA900",
            study_handle(header.study_uid), calling_ae, header.modality or "-",
        )
        return STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS
    try:
        outcome = store.store(header, _part10(received, header), calling_ae)
    except StorageFullError as exc:
        log.error("c-store refused study=%s reason=%s status=0xA700", study_handle(header.study_uid), exc)
        return STATUS_OUT_OF_RESOURCES
    audit.record("dicom-received", calling_ae=calling_ae, peer=received.peer, study_uid=header.study_uid,
                 series_uid=header.series_uid, sop_instance_uid=header.sop_instance_uid,
                 duplicate=outcome.duplicate)
    return STATUS_SUCCESS


def _decoded(received: ReceivedObject) -> Dataset:
    """The received dataset with every element read (pydicom reads lazily).

    Raises
    ------
    InvalidInputError
        pydicom could not decode the bytes; the message names the error type only (the
        bytes may hold PHI).
    """
    syntax = UID(received.transfer_syntax)
    try:
        ds = decode(BytesIO(received.dataset_bytes), syntax.is_implicit_VR, syntax.is_little_endian,
                    syntax.is_deflated)
        for element in ds.iterall():
            element.value  # noqa: B018 - reading the value is the check
    except _PYDICOM_DECODE_ERRORS as exc:
        raise InvalidInputError(f"undecodable dataset ({type(exc).__name__})") from exc
    return ds


def _part10(received: ReceivedObject, header: ReceivedInstance) -> bytes:
    """The DICOM file of the object: preamble, file meta, then the data set as sent."""
    return part10_header(header.sop_class_uid, header.sop_instance_uid, received.transfer_syntax,
                         received.calling_ae) + received.dataset_bytes


def _check_native_pixel_length(ds: Dataset, transfer_syntax: UID) -> None:
    """InvalidInputError when uncompressed Pixel Data is shorter than its geometry says.

    A dataset cut inside its Pixel Data element decodes without error (the short value is
    taken as is), so without this a truncated transfer would be spooled and acknowledged.
    """
    if "PixelData" not in ds or transfer_syntax.is_compressed:
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                    * int(ds.BitsAllocated) // 8 * frames)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidInputError("pixel data without usable Rows/Columns/BitsAllocated") from exc
    if len(ds.PixelData) < expected:
        raise InvalidInputError(f"pixel data truncated: {len(ds.PixelData)} of {expected} bytes")


def handle_echo(event: Event) -> int:
    """EVT_C_ECHO: always 0x0000 (the listener is up)."""
    return STATUS_SUCCESS


def _log_association(event: Event) -> None:
    requestor = event.assoc.requestor
    log.info("association %s calling_ae=%s peer=%s", event.event.name.lower().replace("evt_", ""),
             requestor.ae_title, requestor.address)


def _log_accepted(event: Event, settings: DicomListenerSettings) -> None:
    requestor = event.assoc.requestor
    if may_store(requestor.ae_title, settings):
        _log_association(event)
        return
    log.info("association accepted calling_ae=%s peer=%s for C-ECHO only: C-STORE from this AE title is"
             " refused (0x0124) until it is added to dicom.allowed_calling_ae_titles", requestor.ae_title,
             requestor.address)


def build_application_entity(settings: DicomListenerSettings) -> AE:
    """The listener's AE: CT (and Enhanced CT) storage, Verification, timeouts."""
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.maximum_pdu_size = settings.maximum_pdu_size
    # Every calling AE title may associate and echo; C-STORE checks the allow-list.
    ae.maximum_associations = 16
    for sop_class in sorted(CT_STORAGE_SOP_CLASSES):
        ae.add_supported_context(sop_class, ACCEPTED_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    return ae


def start_listener(settings: DicomListenerSettings, store: InstanceStore,
                   audit: AuditLog) -> ThreadedAssociationServer:
    """Start the SCP in background threads; returns the server (``.shutdown()`` stops it)."""
    ae = build_application_entity(settings)
    handlers: list[evt.EventHandlerType] = [
        (evt.EVT_C_STORE, partial(handle_store, store=store, settings=settings, audit=audit)),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_ACCEPTED, partial(_log_accepted, settings=settings)),
        (evt.EVT_REJECTED, _log_association),
    ]
    context = server_context("dicom", settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    server = ae.start_server((settings.host, settings.port), block=False, evt_handlers=handlers,
                             ssl_context=context)
    assert server is not None  # block=False always returns the server
    tls = "off" if context is None else ("mutual" if settings.tls_client_ca else "server")
    log.info("dicom listener ae_title=%s port=%d tls=%s c-echo=any calling AE c-store=%s", settings.ae_title,
             server.server_address[1], tls,
             ",".join(settings.allowed_calling_ae_titles) or "any calling AE (allow-list empty)")
    return server
