"""The images every analysis step works on: the CT volume and the hematoma mask on its grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CTVolume:
    """A head CT in Hounsfield units with its patient geometry.

    Attributes
    ----------
    hu:
        float32 array, shape (slices, rows, columns); slice 0 is the first slice along
        the slice normal (row x column direction cosines), i.e. ascending position.
    affine_lps:
        4x4 matrix mapping voxel indices (slice, row, column, 1) to DICOM patient
        coordinates (LPS, mm). Column 0 is the step from one slice to the next; for a
        gantry-tilted series it is not parallel to the image plane's normal (a sheared
        grid: the slices are kept as acquired, see inference/gantry_tilt.py).
    spacing_mm:
        (slice spacing, row spacing, column spacing) in mm; the slice spacing is the gap
        between slice planes along their normal, so the product is the voxel volume
        whether or not the grid is sheared.
    sop_instance_uids:
        SOP Instance UID of the image behind each slice, in slice order.
    series_instance_uid, study_instance_uid:
        The source series and study.
    source_frames:
        1-based frame number of each slice in its source instance (all 1 for single-frame
        CT images; the frame order of a multi-frame Enhanced CT image). Empty = all 1.
    slice_thickness_mm, kvp:
        Slice Thickness and KVP of the source images when they state them (the published
        models' domain is stated in these terms); None when unknown.
    """

    hu: np.ndarray
    affine_lps: np.ndarray
    spacing_mm: tuple[float, float, float]
    sop_instance_uids: tuple[str, ...]
    series_instance_uid: str
    study_instance_uid: str
    source_frames: tuple[int, ...] = ()
    slice_thickness_mm: float | None = None
    kvp: float | None = None

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"a CT volume is 3-D, got shape {self.hu.shape}")
        if len(self.sop_instance_uids) != self.hu.shape[0]:
            raise ValueError("one SOP Instance UID per slice is required")
        if self.source_frames and len(self.source_frames) != self.hu.shape[0]:
            raise ValueError("one source frame number per slice is required")
        if self.affine_lps.shape != (4, 4):
            raise ValueError("affine_lps must be 4x4")
        if min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing_mm}")

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        s, r, c = self.spacing_mm
        return s * r * c / 1000.0

    @property
    def geometry(self) -> VolumeGeometry:
        """Where the voxels are and which images they came from, without the HU."""
        return VolumeGeometry(
            shape=(int(self.hu.shape[0]), int(self.hu.shape[1]), int(self.hu.shape[2])),
            affine_lps=self.affine_lps, spacing_mm=self.spacing_mm,
            sop_instance_uids=self.sop_instance_uids, series_instance_uid=self.series_instance_uid,
            study_instance_uid=self.study_instance_uid, source_frames=self.source_frames,
        )


@dataclass(frozen=True)
class VolumeGeometry:
    """A CT volume's grid and source images without its voxels: what the report stage
    needs to put a mask back on the source slices (SEG frames, key image).

    Fields mean what they mean on ``CTVolume``; ``shape`` is (slices, rows, columns).
    """

    shape: tuple[int, int, int]
    affine_lps: np.ndarray
    spacing_mm: tuple[float, float, float]
    sop_instance_uids: tuple[str, ...]
    series_instance_uid: str
    study_instance_uid: str
    source_frames: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sop_instance_uids) != self.shape[0]:
            raise ValueError("one SOP Instance UID per slice is required")
        if self.source_frames and len(self.source_frames) != self.shape[0]:
            raise ValueError("one source frame number per slice is required")

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        s, r, c = self.spacing_mm
        return s * r * c / 1000.0


@dataclass(frozen=True)
class HematomaMask:
    """Intraparenchymal hematoma mask on the voxel grid of a CTVolume, and the other
    kinds of blood when the method tells them apart.

    ``mask`` is a boolean array of the volume's shape: the intraparenchymal hematoma, the
    only blood counted in the hematoma volume. ``intraventricular``, ``extra_axial``
    (subdural, epidural, subarachnoid) and ``perilesional_oedema`` are optional boolean
    masks of the same shape, None when the method cannot separate that class (an
    all-False mask means it looked and found none). ``learned`` is False only for
    methods with no trained weights (the SEG then names the algorithm family
    "Morphological Operations" rather than "Artificial Intelligence"). ``notes`` are
    what a report must say about the method (model origin, validation, domain).
    """

    mask: np.ndarray
    method_name: str
    method_version: str
    intraventricular: np.ndarray | None = None
    learned: bool = True
    extra_axial: np.ndarray | None = None
    perilesional_oedema: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mask.dtype != np.bool_:
            raise ValueError("a hematoma mask is boolean")
        for name in ("intraventricular", "extra_axial", "perilesional_oedema"):
            other = getattr(self, name)
            if other is not None and (other.dtype != np.bool_ or other.shape != self.mask.shape):
                raise ValueError(f"the {name} mask must be boolean and of the hematoma mask's shape")
