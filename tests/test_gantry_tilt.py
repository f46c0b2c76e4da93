"""Gantry-tilted series end to end on the inference side: volume, SEG geometry, NIfTI.

The same synthetic head (a 26.5 mL hematoma) written at 0, 12 and 25 degrees of gantry
tilt (tests/support/phantoms.py: positions sheared along the column direction, Gantry/
Detector Tilt set, orientation unchanged). Phantoms only, no patient data.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from daemon.config import ReportSettings
from daemon.report.seg_builder import build_segmentation
from daemon.report.validation import validate_report_objects
from domain.imaging import CTVolume, HematomaMask
from inference.gantry_tilt import gantry_tilt_deg, is_sheared
from inference.masking.threshold import ThresholdMasker
from inference.measurements import measure_hematoma
from inference.nifti_io import mask_to_nifti, volume_to_nifti
from inference.series_to_volume import volume_from_datasets
from tests.support.phantoms import PhantomSeries, make_head_ct_series

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

TILTS = (0.0, 12.0, 25.0)


def _series(folder: Path, tilt_deg: float) -> PhantomSeries:
    # 230 mm field, 2.5 mm slices over 100 mm: the 25-degree shear (+-23 mm) stays in it.
    return make_head_ct_series(folder, slices=40, rows=256, pixel_mm=0.9, slice_mm=2.5,
                               gantry_tilt_deg=tilt_deg)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory
             ) -> dict[float, tuple[PhantomSeries, CTVolume, HematomaMask]]:
    out = {}
    for tilt in TILTS:
        series = _series(tmp_path_factory.mktemp(f"tilt{tilt:g}"), tilt)
        volume = volume_from_datasets([pydicom.dcmread(p) for p in series.paths])
        out[tilt] = (series, volume, ThresholdMasker().segment(volume))
    return out


def test_volume_does_not_depend_on_the_tilt(
        measured: dict[float, tuple[PhantomSeries, CTVolume, HematomaMask]]) -> None:
    volumes = {t: measure_hematoma(v, m).volume_ml for t, (_, v, m) in measured.items()}
    truth = measured[0.0][0].hematoma_volume_ml
    for tilt in TILTS:
        assert gantry_tilt_deg(measured[tilt][1].affine_lps) == pytest.approx(tilt, abs=1e-6)
        assert abs(volumes[tilt] - volumes[0.0]) / volumes[0.0] <= 0.03, volumes
        assert abs(volumes[tilt] - truth) / truth <= 0.10, (volumes, truth)


@pytest.mark.parametrize("tilt", TILTS[1:])
def test_seg_of_a_tilted_series_overlays_its_source_slices(
        measured: dict[float, tuple[PhantomSeries, CTVolume, HematomaMask]], tilt: float) -> None:
    """The volume keeps the acquired slices, so the SEG builder makes one frame per source
    image at that image's position, and each frame marks where the hematoma lies on it."""
    series, volume, mask = measured[tilt]
    images = [pydicom.dcmread(p) for p in series.paths]
    seg = build_segmentation(images, volume.geometry, mask, ReportSettings(), "0.1.0")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in images}
    truth_by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): t
                    for p, t in zip(series.paths, series.hematoma)}
    frames = seg.pixel_array.reshape(-1, *volume.hu.shape[1:]).astype(bool)
    agree = marked = 0
    for item, frame in zip(seg.PerFrameFunctionalGroupsSequence, frames):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in by_uid[uid].ImagePositionPatient])
        agree += int(np.sum(frame & truth_by_uid[uid]))
        marked += int(frame.sum())
    assert len(frames) > 5
    # Dice with the truth on every source slice (the SEG leaves out empty frames).
    assert 2 * agree / (marked + int(np.sum(series.hematoma))) >= 0.85
    validate_report_objects([seg], require_tools=True)


def test_nifti_export_of_a_tilted_volume_is_orthogonal_and_in_place(
        measured: dict[float, tuple[PhantomSeries, CTVolume, HematomaMask]]) -> None:
    """Exported on an orthogonal grid (readers drop a shear), the mask keeps its volume
    and sits where the hematoma is (centre 28 mm left of the head's centre: RAS x -28)."""
    _, volume, mask = measured[25.0]
    assert is_sheared(volume.affine_lps, volume.hu.shape[0])
    image = mask_to_nifti(volume.geometry, mask)
    ct = volume_to_nifti(volume)
    assert ct.shape == image.shape and np.allclose(ct.affine, image.affine)
    axes = image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0)
    assert np.allclose(axes.T @ axes, np.eye(3), atol=1e-9)  # orthogonal: nothing to drop
    data = np.asarray(image.dataobj)
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000
    source_ml = measure_hematoma(volume, mask).volume_ml
    assert abs(data.sum() * voxel_ml - source_ml) / source_ml <= 0.02
    centre = nib.affines.apply_affine(image.affine, np.argwhere(data > 0).mean(axis=0))
    assert centre == pytest.approx([-28.0, 0.0, 0.0], abs=1.5)
