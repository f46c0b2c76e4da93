"""Hematoma volume by planimetry and by the ABC/2 ellipsoid rule."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from domain.imaging import CTVolume, HematomaMask
from domain.measurements import HematomaMeasurements, ivh_present
from inference.boxes import bounding_box


def measure_hematoma(volume: CTVolume, mask: HematomaMask) -> HematomaMeasurements:
    """Planimetric volume of ``mask`` and the ABC/2 estimate of its largest hematoma.

    Planimetry counts every voxel of the mask. ABC/2 (Kothari 1996) takes the largest
    connected hematoma: A is its longest axial diameter on the slice where its area is
    largest, B the largest extent perpendicular to A on that slice, C the number of
    slices it spans times the slice spacing; ABC/2 = A x B x C / 2. Intraventricular
    extension is present from ``IVH_PRESENT_MIN_ML`` of intraventricular blood on.
    """
    if mask.mask.shape != volume.hu.shape:
        raise ValueError(f"mask shape {mask.mask.shape} differs from volume shape {volume.hu.shape}")
    voxel_count = int(np.count_nonzero(mask.mask))
    ivh_ml = _planimetry_ml(mask.intraventricular, volume)
    intraventricular = ivh_present(ivh_ml)
    eah_ml = _planimetry_ml(mask.extra_axial, volume)
    oedema_ml = _planimetry_ml(mask.perilesional_oedema, volume)
    if voxel_count == 0:
        return HematomaMeasurements(0.0, 0.0, (0.0, 0.0, 0.0), 0, intraventricular,
                                    mask.method_name, mask.method_version, ivh_ml, eah_ml, oedema_ml, mask.notes)
    occupied = bounding_box(mask.mask)  # not None: the mask has voxels; diameters are measured inside it
    assert occupied is not None
    a_mm, b_mm, c_mm = abc_diameters_mm(_largest_component(mask.mask[occupied]), volume.spacing_mm)
    return HematomaMeasurements(
        volume_ml=voxel_count * volume.voxel_volume_ml,
        abc2_ml=a_mm * b_mm * c_mm / 2.0 / 1000.0,
        diameters_mm=(a_mm, b_mm, c_mm),
        voxel_count=voxel_count,
        intraventricular_extension=intraventricular,
        method_name=mask.method_name,
        method_version=mask.method_version,
        intraventricular_volume_ml=ivh_ml,
        extra_axial_volume_ml=eah_ml,
        perilesional_oedema_volume_ml=oedema_ml,
        method_notes=mask.notes,
    )


def _planimetry_ml(mask: np.ndarray | None, volume: CTVolume) -> float | None:
    return None if mask is None else int(np.count_nonzero(mask)) * volume.voxel_volume_ml


def abc_diameters_mm(component: np.ndarray, spacing_mm: tuple[float, float, float]) -> tuple[float, float, float]:
    """(A, B, C) in mm of one connected hematoma, (slices, rows, columns) boolean."""
    slice_mm, row_mm, column_mm = spacing_mm
    areas = component.sum(axis=(1, 2))
    largest_slice = component[int(np.argmax(areas))]
    points = np.argwhere(largest_slice).astype(np.float64) * (row_mm, column_mm)
    # Pixel centres underestimate an extent by one pixel: measure between pixel edges.
    corners = np.concatenate([points + (dy, dx) for dy in (-row_mm / 2, row_mm / 2)
                              for dx in (-column_mm / 2, column_mm / 2)])
    hull = corners[ConvexHull(corners).vertices]
    differences = hull[:, None, :] - hull[None, :, :]
    distances = np.hypot(differences[..., 0], differences[..., 1])
    i, j = np.unravel_index(int(np.argmax(distances)), distances.shape)
    a_mm = float(distances[i, j])
    direction = (hull[j] - hull[i]) / a_mm
    perpendicular = hull @ np.array([-direction[1], direction[0]])
    b_mm = float(perpendicular.max() - perpendicular.min())
    c_mm = float(np.count_nonzero(areas)) * slice_mm
    return a_mm, b_mm, c_mm


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    box_label = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return labels == box_label
