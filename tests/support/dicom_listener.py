"""The node's receive path alone (listener + instance store + series tracker) on a loopback
port, and the small synthetic CT images tests send it (not anatomy)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import create_file_meta, encode_file_meta, split_dataset
from pynetdicom.sop_class import CTImageStorage
from pynetdicom.transport import ThreadedAssociationServer

from daemon.assemble.series_tracker import SeriesTracker
from daemon.audit_log import AuditLog
from daemon.config import DicomListenerSettings, SeriesCompletionSettings
from daemon.receive.instance_store import InstanceStore
from daemon.receive.storage_scp import start_listener
from daemon.state.database import Database
from daemon.state.image_repository import StoredInstance
from tests.support.databases import open_database


def tiny_ct(path: Path, study_uid: str, series_uid: str, index: int, modality: str = "CT") -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientID = "LISTENER-TEST"
    ds.InstanceNumber = index + 1
    ds.ImagesInAcquisition = 3
    ds.ImagePositionPatient = [0, 0, float(index)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = np.full((8, 8), 1064, dtype=np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Listener:
    """A running receive path: its port, database and spool folder."""

    port: int
    db: Database
    spool: Path
    server: ThreadedAssociationServer
    audit: AuditLog
    store: InstanceStore

    def instances(self, series_uid: str | None = None) -> list[StoredInstance]:
        with self.db.reading() as repos:
            return repos.images.instances(series_uid)

    def count(self) -> int:
        with self.db.reading() as repos:
            return repos.images.instance_count()

    def stop(self) -> None:
        self.server.shutdown()
        self.store.close()
        self.audit.close()
        self.db.close()


def start_receive_listener(folder: Path, **overrides: object) -> Listener:
    """The listener on a free loopback port (bound as port 0: no race for the port)."""
    settings = DicomListenerSettings(**{"host": "127.0.0.1", "port": 0,  # type: ignore[arg-type]
                                        "allowed_calling_ae_titles": ["STORESCU"], **overrides})
    db = open_database(folder / "db.sqlite3")
    tracker = SeriesTracker(db, SeriesCompletionSettings())
    store = InstanceStore(db, folder / "spool", settings.min_free_disk_mb * 1024 * 1024, tracker,
                          durability=settings.durability, write_back_interval_s=settings.write_back_interval_s)
    audit = AuditLog(folder / "logs")
    server = start_listener(settings, store, audit, on_release=tracker.association_released)
    return Listener(int(server.server_address[1]), db, folder / "spool", server, audit, store)


def storescu(port: int, files: list[Path], aet: str = "STORESCU", *extra: str,
             timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """dcmtk's storescu sending ``files`` to the listener or node on ``port`` (returns the
    finished process)."""
    return subprocess.run(
        ["storescu", "-aet", aet, "-aec", "HEMEX", *extra, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def send(port: int, dataset: Path | Dataset, sop_class: str = CTImageStorage,
         transfer_syntax: str = ExplicitVRLittleEndian) -> int | None:
    """C-STORE one object with pynetdicom; the status, or None when no context was accepted."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(sop_class, transfer_syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="HEMEX")
    assert assoc.is_established
    try:
        if not assoc.accepted_contexts:
            return None
        status = assoc.send_c_store(dataset)
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def send_raw(port: int, dataset_bytes: bytes, folder: Path) -> int:
    """C-STORE bytes no SCU would encode, as they are: pynetdicom streams a file's data set
    without decoding it when ``STORE_SEND_CHUNKED_DATASET`` is on (its documented switch)."""
    meta = create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=generate_uid(),
                            transfer_syntax=ExplicitVRLittleEndian)
    path = folder / f"raw-{generate_uid()}.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + encode_file_meta(meta) + dataset_bytes)
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = send(port, path)
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous
    assert status is not None, "no C-STORE response from the listener"
    return status


def dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file (after preamble and file meta)."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def still_serving(listener: Listener, folder: Path) -> None:
    """A good image sent after whatever came before is stored and acknowledged."""
    good = tiny_ct(folder / f"good-{generate_uid()}.dcm", generate_uid(), generate_uid(), 0)
    before = listener.count()
    assert send(listener.port, good) == 0x0000
    assert listener.count() == before + 1
