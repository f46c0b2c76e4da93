"""Synthetic head CT series with a hematoma of known volume (no patient data).

The head is a set of nested ellipsoids in patient coordinates (LPS, mm, origin at the
head's centre): air, scalp (40 HU), skull (1000 HU), a thin CSF layer, cortex (38 HU),
white matter (28 HU), two lateral ventricles (6 HU), a calcified pineal gland (180 HU)
and an ellipsoidal hematoma (65 HU, acute clotted blood) ringed by hypodense oedema,
plus Gaussian noise. Written as real CT Image Storage files (stored value = HU + 1024,
Rescale Intercept -1024), so the whole receive -> volume -> mask path runs on them.

``lesion_labels`` replaces the ellipsoid by a label map (1 intraparenchymal, 2
extra-axial, 3 oedema, 4 intraventricular blood), e.g. the real lesion map of
../shared/data/blast_ct_v1 resampled onto the phantom's grid.

``acquired_at`` dates the study (a baseline and its follow-up hours later).

``gantry_tilt_deg`` writes the series as scanners write a tilted axial acquisition:
Image Orientation (Patient) stays axial, each slice's Image Position is shifted along
the column direction by z x tan(tilt), and Gantry/Detector Tilt is set. The pixels are
the same head sampled where each shifted slice lies, so the hematoma's true volume does
not depend on the tilt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

HU_AIR, HU_SCALP, HU_BONE, HU_CSF = -1000.0, 40.0, 1000.0, 6.0
HU_CORTEX, HU_WHITE, HU_BLOOD, HU_OEDEMA, HU_CALCIFICATION = 38.0, 28.0, 65.0, 20.0, 180.0
HEAD_RADII_MM = (72.0, 92.0, 85.0)   # x (left-right), y (front-back), z (up-down)
SCALP_MM, SKULL_MM, CSF_MM, CORTEX_MM = 5.0, 7.0, 1.5, 3.0
VENTRICLE_CENTRES_MM = ((-9.0, -5.0, 8.0), (9.0, -5.0, 8.0))   # right, left lateral ventricle
VENTRICLE_RADII_MM = (5.0, 24.0, 9.0)


@dataclass(frozen=True)
class PhantomSeries:
    """What a test needs to know about a written phantom series."""

    paths: list[Path]
    study_uid: str
    series_uid: str
    patient_id: str
    accession: str
    hematoma_volume_ml: float          # truth: the ellipsoid's volume, or the label map's voxels
    hu: np.ndarray = field(repr=False)  # (slices, rows, columns), the HU written
    hematoma: np.ndarray = field(repr=False)  # boolean truth on the same grid
    spacing_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


def ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: tuple[float, float, float],
               radii: tuple[float, float, float]) -> np.ndarray:
    return (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


def head_hu(slices: int, rows: int, pixel_mm: float, slice_mm: float,
            hematoma_radii_mm: tuple[float, float, float] | None,
            hematoma_centre_mm: tuple[float, float, float], lesion_labels: np.ndarray | None,
            noise_hu: float, seed: int, gantry_tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(HU volume, hematoma truth), both (slices, rows, rows); slice 0 is the most caudal.

    Slices thicker than 1.5 mm average three thin sub-slices, so edges carry the partial
    volume a real scanner gives them (the hardest part for a threshold). With a gantry
    tilt, slice k's field of view is shifted along y (posterior) by z_k x tan(tilt).
    """
    samples = 3 if slice_mm >= 1.5 and lesion_labels is None else 1
    hu = np.zeros((slices, rows, rows), np.float32)
    hematoma = np.zeros(hu.shape, bool)
    for sample in range(samples):
        offset = (sample - (samples - 1) / 2) * slice_mm / samples
        part, truth = _head_hu_at(slices, rows, pixel_mm, slice_mm, offset, hematoma_radii_mm,
                                  hematoma_centre_mm, lesion_labels, gantry_tilt_deg)
        hu += part / samples
        if sample == (samples - 1) // 2:
            hematoma = truth
    if noise_hu > 0:
        hu += np.random.default_rng(seed).normal(0.0, noise_hu, hu.shape).astype(np.float32)
    return hu, hematoma


def head_hu_with_lesions(slices: int, rows: int, pixel_mm: float, slice_mm: float,
                         lesions: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                         noise_hu: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(HU volume, label map) with lesions drawn by ``lesions(x, y, z)`` (mm from the head's
    centre, broadcastable grids) -> labels (1 intraparenchymal, 2 extra-axial, 3 oedema,
    4 intraventricular). Thick slices average three sub-slices as ``head_hu`` does, the
    lesions' edges included; the labels are those of the middle sub-slice.
    """
    samples = 3 if slice_mm >= 1.5 else 1
    hu = np.zeros((slices, rows, rows), np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    for sample in range(samples):
        offset = (sample - (samples - 1) / 2) * slice_mm / samples
        z, y, x = _coordinates(slices, rows, pixel_mm, slice_mm, offset)
        drawn = np.broadcast_to(lesions(x, y, z), hu.shape).astype(np.uint8)
        part, _ = _head_hu_at(slices, rows, pixel_mm, slice_mm, offset, None, (0.0, 0.0, 0.0), drawn)
        hu += part / samples
        if sample == (samples - 1) // 2:
            labels = drawn.copy()
    if noise_hu > 0:
        hu += np.random.default_rng(seed).normal(0.0, noise_hu, hu.shape).astype(np.float32)
    return hu, labels


def _coordinates(slices: int, rows: int, pixel_mm: float, slice_mm: float, z_offset_mm: float,
                 gantry_tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) in mm from the head's centre, shaped to broadcast over (slices, rows, rows);
    a tilted gantry shifts each slice's rows along y (``tilt_shift_mm``)."""
    z_slice = (np.arange(slices) - (slices - 1) / 2) * slice_mm
    z = (z_slice + z_offset_mm)[:, None, None]
    y = ((np.arange(rows) - (rows - 1) / 2) * pixel_mm)[None, :, None] + tilt_shift_mm(
        z_slice, gantry_tilt_deg)[:, None, None]
    x = ((np.arange(rows) - (rows - 1) / 2) * pixel_mm)[None, None, :]
    return z, y, x


def _head_hu_at(slices: int, rows: int, pixel_mm: float, slice_mm: float, z_offset_mm: float,
                hematoma_radii_mm: tuple[float, float, float] | None,
                hematoma_centre_mm: tuple[float, float, float],
                lesion_labels: np.ndarray | None, gantry_tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = _coordinates(slices, rows, pixel_mm, slice_mm, z_offset_mm, gantry_tilt_deg)
    origin = (0.0, 0.0, 0.0)

    def shrunk(margin: float) -> tuple[float, float, float]:
        return tuple(r - margin for r in HEAD_RADII_MM)  # type: ignore[return-value]

    hu = np.full((slices, rows, rows), HU_AIR, np.float32)
    hu[ellipsoid(x, y, z, origin, HEAD_RADII_MM)] = HU_SCALP
    hu[ellipsoid(x, y, z, origin, shrunk(SCALP_MM))] = HU_BONE
    inner = SCALP_MM + SKULL_MM
    hu[ellipsoid(x, y, z, origin, shrunk(inner))] = HU_CSF
    hu[ellipsoid(x, y, z, origin, shrunk(inner + CSF_MM))] = HU_CORTEX
    hu[ellipsoid(x, y, z, origin, shrunk(inner + CSF_MM + CORTEX_MM))] = HU_WHITE
    for centre in VENTRICLE_CENTRES_MM:
        hu[ellipsoid(x, y, z, centre, VENTRICLE_RADII_MM)] = HU_CSF
    hu[ellipsoid(x, y, z, (0.0, 28.0, 4.0), (3.0, 3.0, 3.0))] = HU_CALCIFICATION
    if lesion_labels is not None:
        if lesion_labels.shape != hu.shape:
            raise ValueError(f"label map {lesion_labels.shape} is not the phantom's grid {hu.shape}")
        hu[lesion_labels == 3] = HU_OEDEMA
        hu[np.isin(lesion_labels, (1, 2, 4))] = HU_BLOOD
        return hu, lesion_labels == 1
    if hematoma_radii_mm is None:
        return hu, np.zeros(hu.shape, bool)
    oedema_radii = tuple(r + 3.0 for r in hematoma_radii_mm)
    hu[ellipsoid(x, y, z, hematoma_centre_mm, oedema_radii)] = HU_OEDEMA  # type: ignore[arg-type]
    hematoma = ellipsoid(x, y, z, hematoma_centre_mm, hematoma_radii_mm)
    hu[hematoma] = HU_BLOOD
    return hu, hematoma


def tilt_shift_mm(z_mm: np.ndarray, gantry_tilt_deg: float) -> np.ndarray:
    """How far (mm, along +y) a slice at height ``z_mm`` is shifted by the gantry tilt."""
    return np.asarray(z_mm, dtype=np.float64) * np.tan(np.radians(gantry_tilt_deg))


def ct_slice_dataset(pixels_hu: np.ndarray, index: int, position_z: float, *, study_uid: str,
                     series_uid: str, frame_uid: str, patient_id: str, accession: str,
                     pixel_mm: float, slice_mm: float, slices: int, series_description: str,
                     kernel: str, series_number: int = 2, position_y_shift: float = 0.0,
                     gantry_tilt_deg: float = 0.0, acquired_at: datetime | None = None) -> Dataset:
    """One CT Image Storage slice with the attributes a scanner sends (study, series and
    acquisition on ``acquired_at`` when given, else 2026-11-22 10:15-10:16)."""
    rows = pixels_hu.shape[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Head", patient_id, "19500101", "O"
    ds.IssuerOfPatientID = "HOSP-A"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20261122"
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime, ds.ContentTime = "101500", "101600", "101610", "101610"
    if acquired_at is not None:
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = acquired_at.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = acquired_at.strftime("%H%M%S")
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = accession, "1", ""
    ds.StudyDescription = "CT HEAD WITHOUT CONTRAST"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = "CT", series_number, index + 1, 1
    ds.SeriesDescription, ds.BodyPartExamined = series_description, "HEAD"
    ds.Manufacturer, ds.ManufacturerModelName = "hemex phantom", "synthetic"
    ds.PositionReferenceIndicator, ds.PatientPosition = "", "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ConvolutionKernel, ds.KVP = kernel, 120
    ds.ImagesInAcquisition = slices
    half = (rows - 1) / 2 * pixel_mm
    ds.ImagePositionPatient = [-half, -half + position_y_shift, position_z]
    ds.GantryDetectorTilt = gantry_tilt_deg
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = position_z
    ds.PixelSpacing, ds.SliceThickness = [pixel_mm, pixel_mm], slice_mm
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 80
    stored = np.clip(np.rint(pixels_hu + 1024), 0, 4095).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    return ds


def make_head_ct_series(
    folder: Path,
    slices: int = 40,
    rows: int = 512,
    pixel_mm: float = 0.45,
    slice_mm: float = 2.5,
    hematoma_radii_mm: tuple[float, float, float] | None = (22.0, 18.0, 16.0),
    hematoma_centre_mm: tuple[float, float, float] = (28.0, 0.0, 0.0),
    lesion_labels: np.ndarray | None = None,
    noise_hu: float = 4.0,
    seed: int = 7,
    patient_id: str = "PHANTOM-0001",
    accession: str = "ACC-PHANTOM-1",
    study_uid: str | None = None,
    series_description: str = "HEAD NON-CONTRAST 2.5mm",
    kernel: str = "H30s",
    series_number: int = 2,
    gantry_tilt_deg: float = 0.0,
    acquired_at: datetime | None = None,
) -> PhantomSeries:
    """Write a synthetic head CT series into ``folder`` (one file per slice).

    The slab is centred on the head; ``hematoma_centre_mm`` is (x left, y posterior,
    z superior) from the head's centre. The truth volume is the ellipsoid's
    (4/3 pi abc), or the voxels labelled 1 in ``lesion_labels``. ``gantry_tilt_deg``
    shears the slice positions along the column direction (module docstring).
    """
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    hu, hematoma = head_hu(slices, rows, pixel_mm, slice_mm, hematoma_radii_mm, hematoma_centre_mm,
                           lesion_labels, noise_hu, seed, gantry_tilt_deg)
    paths = []
    for index in range(slices):
        position_z = (index - (slices - 1) / 2) * slice_mm
        shift = float(tilt_shift_mm(np.array(position_z), gantry_tilt_deg))
        ds = ct_slice_dataset(hu[index], index, position_z, study_uid=study_uid, series_uid=series_uid,
                              frame_uid=frame_uid, patient_id=patient_id, accession=accession,
                              pixel_mm=pixel_mm, slice_mm=slice_mm, slices=slices,
                              series_description=series_description, kernel=kernel,
                              series_number=series_number, position_y_shift=shift,
                              gantry_tilt_deg=gantry_tilt_deg, acquired_at=acquired_at)
        path = folder / f"ct{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    if lesion_labels is None and hematoma_radii_mm is not None:
        truth_ml = 4.0 / 3.0 * np.pi * np.prod(hematoma_radii_mm) / 1000.0
    else:
        truth_ml = float(hematoma.sum()) * pixel_mm * pixel_mm * slice_mm / 1000.0
    return PhantomSeries(paths, study_uid, series_uid, patient_id, accession, float(truth_ml), hu,
                         hematoma, (slice_mm, pixel_mm, pixel_mm))
