"""The DICOM listener: C-STORE and C-ECHO SCP for CT images (pynetdicom).

The handlers only decode the header, persist, and return a status; all analysis
happens later, elsewhere (STYLE.md practice 1).
"""

from __future__ import annotations

import logging
import ssl
import struct
from functools import partial

from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.uid import (
    JPEG2000,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
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
    LegacyConvertedEnhancedCTImageStorage,
    RLELossless,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from daemon.audit_log import audit
from daemon.config import DicomListenerSettings
from daemon.receive.instance_store import InstanceHeader, InstanceStore
from domain.errors import ConfigurationError, InvalidInputError, StorageFullError
from domain.handles import study_handle

log = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 Annex B.2.3)
STATUS_SUCCESS = 0x0000
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
ACCEPTED_SOP_CLASSES = (CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)
VERIFICATION_SOP_CLASS = UID("1.2.840.10008.1.1")
# What pydicom raises on damaged bytes when an element is first read. NotImplementedError
# (unknown VR), struct.error (short numeric value) and BytesLengthException (odd length)
# were found by bench/fuzz_parsers.py; uncaught they became pynetdicom's 0xC211 with a
# traceback in the log instead of our 0xC000 with a reason.
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, KeyError, EOFError, OSError, AttributeError,
    NotImplementedError, struct.error, BytesLengthException,
)


def handle_store(event: Event, store: InstanceStore, settings: DicomListenerSettings) -> int:
    """EVT_C_STORE: spool the instance durably, then return its status.

    Returns 0x0000 once the file is on disk and recorded (also for a duplicate),
    0xA700 when the disk is full, 0xA900 when the dataset is not a CT image, and
    0xC000 when it cannot be decoded or lacks its identifying UIDs.
    """
    calling_ae = event.assoc.requestor.ae_title
    try:
        ds = event.dataset
        ds.file_meta = event.file_meta
        header = InstanceHeader.from_dataset(ds)
        _check_native_pixel_length(ds)
    except InvalidInputError as exc:
        log.warning("c-store rejected calling_ae=%s reason=%s status=0xC000", calling_ae, exc)
        return STATUS_CANNOT_UNDERSTAND
    except (*_DECODE_ERRORS,) as exc:
        log.warning("c-store undecodable calling_ae=%s error=%s status=0xC000", calling_ae, type(exc).__name__)
        return STATUS_CANNOT_UNDERSTAND
    if header.sop_class_uid != event.request.AffectedSOPClassUID or header.modality != "CT":
        log.warning(
            "c-store rejected study=%s calling_ae=%s reason=not a CT image (modality=%s) status=0xA900",
            study_handle(header.study_uid), calling_ae, header.modality or "-",
        )
        return STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS
    encoded = event.encoded_dataset(include_meta=True)
    if len(encoded) > settings.max_instance_bytes:
        log.warning("c-store rejected study=%s reason=object too large bytes=%d status=0xA700",
                    study_handle(header.study_uid), len(encoded))
        return STATUS_OUT_OF_RESOURCES
    try:
        outcome = store.store(header, encoded, calling_ae)
    except StorageFullError as exc:
        log.error("c-store refused study=%s reason=%s status=0xA700", study_handle(header.study_uid), exc)
        return STATUS_OUT_OF_RESOURCES
    audit(
        "dicom-received",
        calling_ae=calling_ae,
        peer=f"{event.assoc.requestor.address}:{event.assoc.requestor.port}",
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        sop_instance_uid=header.sop_instance_uid,
        duplicate=outcome.duplicate,
    )
    return STATUS_SUCCESS


def _check_native_pixel_length(ds: Dataset) -> None:
    """InvalidInputError when uncompressed Pixel Data is shorter than its geometry says.

    A dataset cut inside its Pixel Data element decodes without error (the short value is
    taken as is), so without this a truncated transfer would be spooled and acknowledged.
    """
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
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


def build_application_entity(settings: DicomListenerSettings) -> AE:
    """The listener's AE: CT (and Enhanced CT) storage, Verification, timeouts, allow-list."""
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.maximum_pdu_size = settings.maximum_pdu_size
    ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    ae.maximum_associations = 16
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_supported_context(sop_class, ACCEPTED_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION_SOP_CLASS, ALL_TRANSFER_SYNTAXES)
    return ae


def server_ssl_context(settings: DicomListenerSettings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None when ``tls_cert`` is not configured.

    Raises
    ------
    ConfigurationError
        A certificate without its key, or a client CA without a certificate.
    """
    if settings.tls_cert is None:
        if settings.tls_client_ca is not None or settings.tls_key is not None:
            raise ConfigurationError("dicom.tls_key/tls_client_ca need dicom.tls_cert")
        return None
    if settings.tls_key is None:
        raise ConfigurationError("dicom.tls_cert needs dicom.tls_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=settings.tls_client_ca)
    return context


def start_listener(settings: DicomListenerSettings, store: InstanceStore) -> ThreadedAssociationServer:
    """Start the SCP in background threads; returns the server (``.shutdown()`` stops it)."""
    ae = build_application_entity(settings)
    handlers: list[evt.EventHandlerType] = [
        (evt.EVT_C_STORE, partial(handle_store, store=store, settings=settings)),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_ACCEPTED, _log_association),
        (evt.EVT_REJECTED, _log_association),
    ]
    context = server_ssl_context(settings)
    server = ae.start_server((settings.host, settings.port), block=False, evt_handlers=handlers,
                             ssl_context=context)
    assert server is not None  # block=False always returns the server
    tls = "off" if context is None else ("mutual" if settings.tls_client_ca else "server")
    log.info("dicom listener ae_title=%s port=%d tls=%s allowed_calling_ae=%s", settings.ae_title,
             server.server_address[1], tls, ",".join(settings.allowed_calling_ae_titles))
    return server
