"""The DICOM C-STORE SCU channel behind the persistent outbox, against real peers.

Orthanc (started on loopback) is the PACS; a pynetdicom Storage SCP in the test stands in
for a PACS that answers a chosen failure status, one test per status class. The objects
are small synthetic SR and CT data sets made here (no patient data).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, CTImageStorage

from daemon.config import DicomDestination, OutboxSettings
from daemon.deliver.dicom_sender import DicomStoreChannel
from daemon.deliver.outbox import Outbox
from domain.delivery import Channel, DeliveryRequest, DeliveryState
from domain.errors import DeliveryError, PermanentDeliveryError
from tests.support.databases import open_database
from tests.support.peers import Orthanc, free_port, start_orthanc


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _file(path: Path, ds: Dataset, sop_class: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = ds.get("StudyInstanceUID", generate_uid())
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "TEST-0001"
    ds.PatientName = "Synthetic^Phantom"
    ds.save_as(path, enforce_file_format=True)
    return path


def sr_like(path: Path) -> Path:
    """A minimal Comprehensive 3D SR header (Orthanc stores any SOP class)."""
    ds = Dataset()
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    return _file(path, ds, Comprehensive3DSRStorage)


def ct_like(path: Path) -> Path:
    ds = Dataset()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.zeros((8, 8), dtype=np.int16).tobytes()
    return _file(path, ds, CTImageStorage)


def destination(name: str, port: int, ae_title: str = "ORTHANC") -> DicomDestination:
    return DicomDestination(name=name, ae_title=ae_title, host="127.0.0.1", port=port, timeout_s=5.0)


def make_outbox(tmp_path: Path, destinations: list[DicomDestination], clock: Clock) -> Outbox:
    settings = OutboxSettings(retry_initial_s=10.0, retry_max_s=300.0, max_attempts=5)
    return Outbox(open_database(tmp_path / "state.sqlite3"), settings, {"dicom": DicomStoreChannel(destinations)},
                  clock=clock)


def orthanc_sop_uids(orthanc: Orthanc) -> set[str]:
    return {str(orthanc.instance_tags(i)["SOPInstanceUID"]) for i in orthanc.instances()}


def test_sr_and_ct_reach_orthanc_in_one_pass(tmp_path: Path, orthanc: Orthanc) -> None:
    clock = Clock()
    outbox = make_outbox(tmp_path, [destination("pacs", orthanc.dicom_port)], clock)
    sr, ct = sr_like(tmp_path / "sr.dcm"), ct_like(tmp_path / "ct.dcm")
    from pydicom import dcmread

    uids = {str(dcmread(p).SOPInstanceUID) for p in (sr, ct)}
    for path in (sr, ct):
        assert outbox.enqueue(DeliveryRequest(Channel.DICOM, "pacs", str(dcmread(path).SOPInstanceUID), path, "1.2.3"))
    result = outbox.deliver_due()
    assert len(result.delivered) == 2 and not result.retrying and not result.dead
    assert orthanc_sop_uids(orthanc) == uids
    assert outbox.counts_by_state() == {"delivered": 2}


def test_duplicate_enqueue_sends_once_even_after_restart(tmp_path: Path, orthanc: Orthanc) -> None:
    clock = Clock()
    outbox = make_outbox(tmp_path, [destination("pacs", orthanc.dicom_port)], clock)
    sr = sr_like(tmp_path / "sr.dcm")
    assert outbox.enqueue(DeliveryRequest(Channel.DICOM, "pacs", "1.2.826.0.1.3680043.10.1341.1", sr))
    assert not outbox.enqueue(DeliveryRequest(Channel.DICOM, "pacs", "1.2.826.0.1.3680043.10.1341.1", sr))
    assert len(outbox.deliver_due().delivered) == 1
    restarted = make_outbox(tmp_path, [destination("pacs", orthanc.dicom_port)], clock)  # same database
    assert not restarted.enqueue(DeliveryRequest(Channel.DICOM, "pacs", "1.2.826.0.1.3680043.10.1341.1", sr))
    clock.now += 3600
    assert restarted.deliver_due().attempted == 0
    assert len(orthanc.instances()) == 1


def test_pacs_down_backs_off_then_delivers_when_it_returns(tmp_path: Path) -> None:
    port = free_port()
    clock = Clock()
    outbox = make_outbox(tmp_path, [destination("pacs", port)], clock)
    sr = sr_like(tmp_path / "sr.dcm")
    outbox.enqueue(DeliveryRequest(Channel.DICOM, "pacs", "sr-1", sr))

    first = outbox.deliver_due()
    assert first.retrying and not first.delivered
    item = outbox.items()[0]
    assert item.state is DeliveryState.PENDING and item.attempts == 1 and "association" in (item.last_error or "")
    assert 8.0 <= item.next_attempt_at - clock.now <= 10.0  # retry_initial_s with jitter
    assert outbox.deliver_due().attempted == 0  # not due yet

    orthanc = start_orthanc(tmp_path / "orthanc", dicom_port=port)
    try:
        clock.now = item.next_attempt_at
        assert len(outbox.deliver_due().delivered) == 1
        assert len(orthanc.instances()) == 1
        assert outbox.items()[0].attempts == 2
    finally:
        orthanc.stop()


@dataclass
class StatusScp:
    """A pynetdicom Storage SCP answering ``status`` to every C-STORE, counting associations."""

    port: int
    status: int = 0x0000
    associations: int = 0
    stored: list[str] = field(default_factory=list)
    server: object = None

    def _on_store(self, event: evt.Event) -> int:
        self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return self.status

    def _on_accept(self, event: evt.Event) -> None:
        self.associations += 1


@pytest.fixture
def status_scp() -> Iterator[StatusScp]:
    scp = StatusScp(0)
    ae = AE(ae_title="FAKEPACS")
    for sop_class in (Comprehensive3DSRStorage, CTImageStorage):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"])
    scp.server = ae.start_server(("127.0.0.1", 0), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, scp._on_store),
                                               (evt.EVT_ACCEPTED, scp._on_accept)])
    scp.port = int(scp.server.server_address[1])  # type: ignore[attr-defined]
    yield scp
    scp.server.shutdown()  # type: ignore[attr-defined]


def test_one_association_per_destination_per_pass(tmp_path: Path, status_scp: StatusScp) -> None:
    clock = Clock()
    outbox = make_outbox(tmp_path, [destination("scp", status_scp.port, "FAKEPACS")], clock)
    for index in range(4):
        path = ct_like(tmp_path / f"ct{index}.dcm") if index % 2 else sr_like(tmp_path / f"sr{index}.dcm")
        outbox.enqueue(DeliveryRequest(Channel.DICOM, "scp", f"item-{index}", path))
    assert len(outbox.deliver_due().delivered) == 4
    assert status_scp.associations == 1 and len(status_scp.stored) == 4


@pytest.mark.parametrize("status, expected", [
    (0xB000, "delivered"),       # warning: coercion of data elements
    (0xA700, "pending"),         # out of resources: retried
    (0x0110, "pending"),         # processing failure: retried
    (0xA900, "dead"),            # data set does not match SOP class
    (0x0122, "dead"),            # SOP class not supported
    (0xC000, "dead"),            # cannot understand
])
def test_store_status_maps_to_outbox_state(tmp_path: Path, status_scp: StatusScp, status: int,
                                           expected: str) -> None:
    status_scp.status = status
    outbox = make_outbox(tmp_path, [destination("scp", status_scp.port, "FAKEPACS")], Clock())
    outbox.enqueue(DeliveryRequest(Channel.DICOM, "scp", "sr", sr_like(tmp_path / "sr.dcm")))
    outbox.deliver_due()
    item = outbox.items()[0]
    assert item.state.value == expected
    if expected != "delivered":
        assert f"0x{status:04X}" in (item.last_error or "")


def test_channel_errors_directly(tmp_path: Path, status_scp: StatusScp, refusing_port: int) -> None:
    channel = DicomStoreChannel([destination("scp", status_scp.port, "FAKEPACS"),
                                 destination("down", refusing_port)])
    with pytest.raises(DeliveryError):
        channel.send_batch("down", [sr_like(tmp_path / "a.dcm")])
    not_dicom = tmp_path / "note.txt"
    not_dicom.write_text("not DICOM")
    outcomes = channel.send_batch("scp", [not_dicom, sr_like(tmp_path / "b.dcm")])
    assert isinstance(outcomes[0], PermanentDeliveryError) and outcomes[1] is None
    assert isinstance(channel.send_batch("nowhere", [not_dicom])[0], PermanentDeliveryError)


def test_echo_destination(orthanc: Orthanc, refusing_port: int) -> None:
    from daemon.config import Settings
    from daemon.deliver.dicom_sender import echo_destination

    settings = Settings(destinations=[destination("pacs", orthanc.dicom_port),
                                      destination("down", refusing_port)])
    assert echo_destination(settings, "pacs") is True
    assert echo_destination(settings, "down") is False
    with pytest.raises(KeyError):
        echo_destination(settings, "unknown")
