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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

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
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import split_dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from daemon.audit_log import AuditLog, Throttle
from daemon.config import DicomListenerSettings
from daemon.receive.association_series import ReleaseListener, SeriesPerAssociation
from daemon.receive.association_server import (
    ConnectionBudget,
    GuardedAssociationServer,
    start_association_server,
)
from daemon.receive.instance_header import read_instance_header
from daemon.receive.instance_store import InstanceStore
from daemon.receive.part10 import part10_header
from daemon.receive.pdu_guard import PduLimits
from daemon.receive.received_dataset import ReceivedDataset, read_received
from daemon.tls import server_context
from domain.durable_files import FileTail
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


@dataclass(frozen=True)
class ReceivedObject:
    """One C-STORE request's data set as it arrived, with who sent it.

    pynetdicom wrote the data set to a file as its fragments arrived
    (``STORE_RECV_CHUNKED_DATASET``): ``path`` from byte ``offset`` on, encoded in
    ``transfer_syntax``, no decoding and no copy in memory.
    """

    path: Path
    offset: int
    transfer_syntax: str
    affected_sop_class: str
    calling_ae: str
    peer: str
    # The command's Affected SOP Instance UID; pynetdicom's file meta carries it.
    affected_sop_instance: str = ""

    @property
    def size(self) -> int:
        """Bytes of the data set."""
        return self.path.stat().st_size - self.offset


def may_store(calling_ae: str, settings: DicomListenerSettings) -> bool:
    """Whether ``calling_ae`` may C-STORE (an empty allow-list lets every AE title store)."""
    allowed = settings.allowed_calling_ae_titles
    return not allowed or calling_ae.strip() in {title.strip() for title in allowed}


def called_ae_title(event: Event) -> str:
    """The AE title the peer called, from its A-ASSOCIATE request."""
    return str(getattr(event.assoc.requestor.primitive, "called_ae_title", "") or "").strip()


def store_refusal(calling_ae: str, called_ae: str, settings: DicomListenerSettings) -> str | None:
    """Why this association may not C-STORE (the reason names the setting), or None.

    Any AE title may associate and C-ECHO (a scanner's "verify" button works before it is
    configured); images need a calling AE title on the allow-list, sent to this
    listener's own AE title.
    """
    if not may_store(calling_ae, settings):
        return "calling AE title not in dicom.allowed_calling_ae_titles"
    if settings.require_called_ae_title and called_ae != settings.ae_title.strip():
        return "called AE title is not dicom.ae_title (dicom.require_called_ae_title)"
    return None


def handle_store(event: Event, store: InstanceStore, settings: DicomListenerSettings, audit: AuditLog,
                 series: SeriesPerAssociation | None = None) -> int:
    """EVT_C_STORE: spool the instance durably, then return its status (``receive_instance``).

    0x0124 (Refused: Not Authorised) when the calling AE title may not store or the
    peer called another AE title (``store_refusal``), before anything is decoded. Each
    new image is counted for its association in ``series``.
    """
    requestor = event.assoc.requestor
    called = called_ae_title(event)
    refusal = store_refusal(requestor.ae_title, called, settings)
    if refusal is not None:
        peer = f"{requestor.address}:{requestor.port}"
        log.warning("c-store refused calling_ae=%s called_ae=%s peer=%s reason=%s status=0x0124",
                    requestor.ae_title, called, requestor.address, refusal)
        audit.record("dicom-store-refused", calling_ae=requestor.ae_title, called_ae=called, peer=peer,
                     reason=refusal, sop_instance_uid=str(getattr(event.request, "AffectedSOPInstanceUID", "")))
        return STATUS_NOT_AUTHORISED
    path = Path(event.dataset_path)
    _, offset = split_dataset(path)
    received = ReceivedObject(
        path=path, offset=offset, transfer_syntax=str(event.context.transfer_syntax),
        affected_sop_class=str(event.request.AffectedSOPClassUID),
        calling_ae=requestor.ae_title, peer=f"{requestor.address}:{requestor.port}",
        affected_sop_instance=str(event.request.AffectedSOPInstanceUID))  # type: ignore[union-attr]
    on_stored = None if series is None else partial(series.stored, event.assoc)
    return receive_instance(received, store, settings, audit, on_stored)


def receive_instance(received: ReceivedObject, store: InstanceStore, settings: DicomListenerSettings,
                     audit: AuditLog, on_stored: Callable[[str], None] | None = None) -> int:
    """Check one received object, spool it durably and record it; its C-STORE status.

    Returns 0x0000 once the file is stored and recorded as ``dicom.durability`` says
    (``InstanceStore``; also for a duplicate),
    0xA700 when the object is larger than ``max_instance_bytes`` or the disk is full,
    0xA900 when the data set is not a CT image of the SOP class it was sent as (another
    modality, or no Pixel Data), and 0xC000 when it cannot be decoded, lacks its
    identifying UIDs or nests sequences too deeply. The file written is the bytes as sent
    behind a file meta header, never a re-encoding: the file pynetdicom received them
    into, moved into the spool, or its data set copied in chunks (``_spool_content``).
    ``on_stored`` hears the Series Instance UID of each new (not duplicate) instance.
    """
    calling_ae = received.calling_ae
    if received.size > settings.max_instance_bytes:  # the guard aborts long before; kept as a backstop
        log.warning("c-store rejected calling_ae=%s reason=object too large bytes=%d (dicom.max_instance_bytes)"
                    " status=0xA700", calling_ae, received.size)
        return STATUS_OUT_OF_RESOURCES
    try:
        decoded = read_received(received.path, received.offset, UID(received.transfer_syntax),
                                settings.max_instance_bytes)
        header = read_instance_header(decoded.dataset)
        _check_native_pixel_length(decoded, UID(received.transfer_syntax))
    except InvalidInputError as exc:
        log.warning("c-store rejected calling_ae=%s reason=%s status=0xC000", calling_ae, exc)
        return STATUS_CANNOT_UNDERSTAND
    not_ct = _not_the_ct_image_it_claims(header, decoded, received.affected_sop_class)
    if not_ct is not None:
        log.warning("c-store rejected study=%s calling_ae=%s reason=%s status=0xA900",
                    study_handle(header.study_uid), calling_ae, not_ct)
        return STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS
    try:
        outcome = store.store(header, _spool_content(received, header), calling_ae)
    except StorageFullError as exc:
        log.error("c-store refused study=%s reason=%s status=0xA700", study_handle(header.study_uid), exc)
        return STATUS_OUT_OF_RESOURCES
    audit.record("dicom-received", calling_ae=calling_ae, peer=received.peer, study_uid=header.study_uid,
                 series_uid=header.series_uid, sop_instance_uid=header.sop_instance_uid,
                 duplicate=outcome.duplicate)
    if on_stored is not None and not outcome.duplicate:
        on_stored(header.series_uid)
    return STATUS_SUCCESS


def _not_the_ct_image_it_claims(header: ReceivedInstance, decoded: ReceivedDataset, sop_class: str) -> str | None:
    """Why the data set does not match its SOP class (0xA900), or None.

    Pixel Data is type 1 in every CT image IOD: a CT "image" without it is understood
    (so not 0xC000) but is not an instance of the class it was sent as.
    """
    if header.sop_class_uid != sop_class or header.modality != "CT":
        return f"not a CT image (modality={header.modality or '-'})"
    if decoded.pixel_data_bytes is None:
        return "CT image with no Pixel Data"
    return None


def _spool_content(received: ReceivedObject, header: ReceivedInstance) -> FileTail:
    """The spool file: preamble, file meta, then the data set as sent.

    pynetdicom wrote the received file with a file meta made from the command's SOP Class
    and Instance UIDs and the context's transfer syntax: when those are the data set's
    own, that file is moved into the spool as it is (no second write of the object);
    otherwise the data set is copied behind a file meta made from the data set.
    """
    if received.offset and received.affected_sop_instance == header.sop_instance_uid \
            and received.affected_sop_class == header.sop_class_uid:
        return FileTail(b"", received.path, 0, consume_source=True)
    return FileTail(part10_header(header.sop_class_uid, header.sop_instance_uid, received.transfer_syntax,
                                  received.calling_ae), received.path, received.offset)


def _check_native_pixel_length(decoded: ReceivedDataset, transfer_syntax: UID) -> None:
    """InvalidInputError when uncompressed Pixel Data is shorter than its geometry says.

    A data set cut inside its Pixel Data element decodes without error (the short value
    is taken as is), so without this a truncated transfer would be spooled and
    acknowledged. (A long value cut short is caught while reading: it runs past the end.)
    """
    ds = decoded.dataset
    if decoded.pixel_data_bytes is None or transfer_syntax.is_compressed:
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                    * int(ds.BitsAllocated) // 8 * frames)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidInputError("pixel data without usable Rows/Columns/BitsAllocated") from exc
    if decoded.pixel_data_bytes < expected:
        raise InvalidInputError(f"pixel data truncated: {decoded.pixel_data_bytes} of {expected} bytes")


def handle_echo(event: Event) -> int:
    """EVT_C_ECHO: always 0x0000 (the listener is up)."""
    return STATUS_SUCCESS


# (result source, diagnostic) of pynetdicom's A-ASSOCIATE-RJ -> (reason, the setting behind it)
_REJECTIONS: dict[tuple[int | None, int | None], tuple[str, str | None]] = {
    (0x01, 0x03): ("calling AE title not allowed", "dicom.allowed_calling_ae_titles"),
    (0x01, 0x07): ("called AE title is not this listener's", "dicom.require_called_ae_title"),
    (0x03, 0x02): ("too many associations", "dicom.max_associations"),
}


class AssociationRecorder:
    """Logs and audits every association refused, rejected or aborted, with its reason.

    The operational log line names the setting behind a refusal, so the administrator
    knows what to change; repeated refusals of one peer for one reason are reported
    once per ten seconds with a count (``Throttle``).
    """

    def __init__(self, audit: AuditLog, throttle: Throttle | None = None) -> None:
        self._audit = audit
        self._throttle = throttle or Throttle()

    def refusal(self, event: str, peer: str, calling_ae: str, reason: str, setting: str | None) -> None:
        """From the association server: ``refused`` (budget), ``tls-failed`` or ``aborted`` (guard)."""
        host = peer.rsplit(":", 1)[0]
        suppressed = self._throttle.admit(f"{host}|{event}|{setting or reason}")
        if suppressed is None:
            return
        why = f"{reason} ({setting})" if setting else reason
        level = logging.INFO if event == "tls-failed" and setting is None else logging.WARNING
        log.log(level, "association %s peer=%s calling_ae=%s reason=%s%s", event, peer, calling_ae or "-", why,
                f" repeated={suppressed}" if suppressed else "")
        self._audit.record(f"association-{event}", peer=peer, calling_ae=calling_ae or None, reason=why,
                           repeated=suppressed)

    def rejected(self, event: Event) -> None:
        """EVT_REJECTED: which check refused the A-ASSOCIATE-RQ."""
        assoc = event.assoc
        request, answer = assoc.requestor.primitive, assoc.acceptor.primitive
        key = (getattr(answer, "result_source", None), getattr(answer, "diagnostic", None))
        reason, setting = _REJECTIONS.get(key, (f"rejected (source {key[0]}, diagnostic {key[1]})", None))
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        calling = str(getattr(request, "calling_ae_title", "") or "").strip()
        called = str(getattr(request, "called_ae_title", "") or "").strip()
        why = f"{reason} ({setting})" if setting else reason
        log.warning("association rejected peer=%s calling_ae=%s called_ae=%s reason=%s", peer, calling, called, why)
        self._audit.record("association-rejected", peer=peer, calling_ae=calling, called_ae=called, reason=why)

    def aborted(self, event: Event) -> None:
        """EVT_ABORTED: the peer or the network ended the association (A-ABORT, A-P-ABORT)."""
        requestor = event.assoc.requestor
        log.info("association aborted calling_ae=%s peer=%s", requestor.ae_title, requestor.address)
        self._audit.record("association-aborted", peer=f"{requestor.address}:{requestor.port}",
                           calling_ae=requestor.ae_title, reason="A-ABORT or connection lost")


def _log_accepted(event: Event, settings: DicomListenerSettings) -> None:
    requestor = event.assoc.requestor
    refusal = store_refusal(requestor.ae_title, called_ae_title(event), settings)
    if refusal is None:
        log.info("association accepted calling_ae=%s peer=%s", requestor.ae_title, requestor.address)
        return
    log.info("association accepted calling_ae=%s called_ae=%s peer=%s for C-ECHO only: its C-STORE is refused"
             " (0x0124): %s", requestor.ae_title, called_ae_title(event), requestor.address, refusal)


def build_application_entity(settings: DicomListenerSettings) -> AE:
    """The listener's AE: CT (and Enhanced CT) storage, Verification, timeouts."""
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.maximum_pdu_size = settings.maximum_pdu_size
    # Every calling AE title may associate and echo, whatever AE title it calls; C-STORE
    # checks the allow-list and the called AE title (store_refusal).
    # The association server counts connections itself, more exactly (budgets per peer);
    # pynetdicom's own count also includes threads of connections already closed.
    ae.maximum_associations = settings.max_associations * 4
    for sop_class in sorted(CT_STORAGE_SOP_CLASSES):
        ae.add_supported_context(sop_class, ACCEPTED_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    return ae


def start_listener(settings: DicomListenerSettings, store: InstanceStore, audit: AuditLog,
                   on_release: ReleaseListener | None = None) -> GuardedAssociationServer:
    """Start the SCP in background threads; returns the server (``.shutdown()`` stops it).

    ``on_release`` hears, at each orderly A-RELEASE, which series the association brought
    (``SeriesPerAssociation``; the series tracker completes whole stacks at once).

    Received data sets go to a file as their fragments arrive (pynetdicom's
    ``STORE_RECV_CHUNKED_DATASET``, a process-wide switch), in the process's temporary
    folder (the node points it into its data directory): memory per object stays
    bounded whatever its size.
    """
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    ae = build_application_entity(settings)
    recorder = AssociationRecorder(audit)
    series = None if on_release is None else SeriesPerAssociation(on_release)
    handlers: list[evt.EventHandlerType] = [
        (evt.EVT_C_STORE, partial(handle_store, store=store, settings=settings, audit=audit, series=series)),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_ACCEPTED, partial(_log_accepted, settings=settings)),
        (evt.EVT_REJECTED, recorder.rejected),
        (evt.EVT_ABORTED, recorder.aborted),
    ]
    if series is not None:
        handlers += [(evt.EVT_RELEASED, series.released), (evt.EVT_CONN_CLOSE, series.closed)]
    context = server_context("dicom", settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    budget = ConnectionBudget(settings.max_associations, settings.max_associations_per_peer,
                              settings.tls_handshake_timeout_s)
    limits = PduLimits(max_pdu_bytes=settings.maximum_pdu_size, max_instance_bytes=settings.max_instance_bytes,
                       acse_timeout_s=settings.acse_timeout_s, dimse_timeout_s=settings.dimse_timeout_s,
                       network_timeout_s=settings.network_timeout_s)
    server = start_association_server(ae, (settings.host, settings.port), context, handlers, budget, limits,
                                      recorder.refusal)
    tls = "off" if context is None else ("mutual" if settings.tls_client_ca else "server")
    log.info("dicom listener ae_title=%s port=%d tls=%s c-echo=any calling AE c-store=%s require_called_ae=%s"
             " max_associations=%d per_peer=%d max_pdu=%d", settings.ae_title, server.server_address[1], tls,
             ",".join(settings.allowed_calling_ae_titles) or "any calling AE (allow-list empty)",
             settings.require_called_ae_title, settings.max_associations, settings.max_associations_per_peer,
             settings.maximum_pdu_size)
    return server
