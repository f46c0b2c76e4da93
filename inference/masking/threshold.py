"""Training-free intraparenchymal hematoma masking: skull removal, HU thresholds around
acute blood, connected components and morphology (method ``hemex-threshold``).

Steps (parameters in ``[masking.threshold]`` of config.toml; rationale in docs/masking.md):

1. Smooth the HU volume (Gaussian, ``smoothing_sigma_mm``) so noise does not push grey
   matter (35-45 HU) into the blood range.
2. Intracranial space, on a ~1 mm grid for speed: soft tissue (-15..100 HU)
   away from bone (> ``bone_hu``), opened by ``opening_mm`` so scalp and neck are cut
   off where they touch the brain through skull openings, largest 3-D component.
3. Core: the intracranial space minus a ``brain_margin_mm`` band along its surface,
   where partial volume of the inner table and beam hardening mimic blood.
4. Candidates: smoothed HU in [``blood_hu_min``, ``blood_hu_max``] in the core, away
   from calcification (> 100 HU, dilated by one voxel).
5. Components (3-D, face connectivity) smaller than ``min_component_ml`` are noise.
   A component with more than ``extra_axial_fraction`` of its voxels within
   ``extra_axial_band_mm`` of the intracranial surface lies along the skull: extra-axial
   (subdural/epidural/subarachnoid) blood, not intraparenchymal; it is dropped.
6. Holes inside each kept component (hypodense swirl, fluid levels) are filled.

Known limits: intraventricular blood is not separated (``intraventricular`` is None),
a hematoma that touches the skull over most of its surface is taken for extra-axial
blood, and hyperdense non-blood (a dense falx, some tumours) inside the brain can be
included. A learned method can replace it through ``masking.method``.
"""

from __future__ import annotations

import logging
import math

import edt
import numpy as np
from scipy import ndimage

from domain.imaging import CTVolume, HematomaMask
from inference.parameters import ThresholdParameters

log = logging.getLogger("hemex.inference")

METHOD_NAME = "hemex-threshold"
METHOD_VERSION = "1.0.0"

_SOFT_TISSUE_HU = (-15.0, 100.0)
_CALCIFICATION_HU = 100.0
_COARSE_MM = 1.0  # grid of the intracranial-space steps
_AIR_HU = -300.0


class ThresholdMasker:
    """Implements ``HematomaMasker``; holds only its parameters (no weights)."""

    name = METHOD_NAME
    version = METHOD_VERSION

    def __init__(self, parameters: ThresholdParameters | None = None) -> None:
        self._settings = parameters or ThresholdParameters()

    def segment(self, volume: CTVolume) -> HematomaMask:
        """The intraparenchymal hematoma mask of ``volume`` (see the module docstring)."""
        s = self._settings
        mask = np.zeros(volume.hu.shape, bool)
        box = _head_box(volume.hu)
        if box is None:
            log.info("event=masking method=%s components=0 reason=no head in the volume", METHOD_NAME)
            return self._result(mask)
        hu = volume.hu[box]
        smoothed = ndimage.gaussian_filter(
            hu, sigma=[s.smoothing_sigma_mm / d for d in volume.spacing_mm], truncate=2.5)
        factors = tuple(max(1, round(_COARSE_MM / d)) for d in volume.spacing_mm)
        coarse = tuple(slice(None, None, f) for f in factors)
        coarse_spacing = tuple(d * f for d, f in zip(volume.spacing_mm, factors))
        intracranial = _intracranial_space(hu[coarse], smoothed[coarse], coarse_spacing, s)
        depth = _distance_inside(intracranial, coarse_spacing)
        core = _upsample(depth > s.brain_margin_mm, factors, hu.shape)
        near_surface = _upsample(depth <= s.extra_axial_band_mm, factors, hu.shape)
        calcified = ndimage.binary_dilation(hu > _CALCIFICATION_HU, iterations=1)
        allowed = core & ~calcified & (smoothed <= s.blood_hu_max)
        del calcified, core
        kept = self._keep_intraparenchymal((smoothed >= s.blood_hu_min) & allowed, near_surface,
                                           volume.voxel_volume_ml)
        # The rim: smoothing blurs a hematoma's edge with the oedema around it (20 HU), which
        # pulls edge voxels below blood_hu_min. Voxels next to a kept hematoma join it when
        # their unsmoothed HU is in the blood range (edges against brain stay unbiased).
        # (scipy dilates until nothing changes when iterations < 1: 0 must mean no rim.)
        if s.rim_voxels > 0:
            rim = (hu >= s.blood_hu_min) & allowed
            kept |= ndimage.binary_dilation(kept, iterations=s.rim_voxels, mask=rim)
        mask[box] = kept
        return self._result(mask)

    @staticmethod
    def _result(mask: np.ndarray) -> HematomaMask:
        return HematomaMask(mask=mask, method_name=METHOD_NAME, method_version=METHOD_VERSION,
                            intraventricular=None, learned=False)

    def _keep_intraparenchymal(self, candidates: np.ndarray, near_surface: np.ndarray,
                               voxel_ml: float) -> np.ndarray:
        s = self._settings
        labels, count = ndimage.label(candidates)
        mask = np.zeros(candidates.shape, bool)
        if count == 0:
            return mask
        min_voxels = math.ceil(s.min_component_ml / voxel_ml)
        kept = dropped_small = dropped_extra_axial = 0
        # Counted in each component's bounding box: np.bincount over the whole label
        # array would copy it as int64 (+0.3 GB on a 300-slice series).
        for label, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            component = labels[box] == label
            size = int(np.count_nonzero(component))
            if size < min_voxels:
                dropped_small += 1
                continue
            if np.count_nonzero(near_surface[box] & component) / size > s.extra_axial_fraction:
                dropped_extra_axial += 1
                continue
            mask[box] |= ndimage.binary_fill_holes(component)
            kept += 1
        log.info("event=masking method=%s components=%d kept=%d small=%d extra_axial=%d",
                 METHOD_NAME, count, kept, dropped_small, dropped_extra_axial)
        return mask


def _head_box(hu: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The bounding box of everything denser than air (the head and its holder).

    Slice by slice, so no full-size temporary is made.
    """
    in_slices = np.zeros(hu.shape[0], bool)
    in_rows = np.zeros(hu.shape[1], bool)
    in_columns = np.zeros(hu.shape[2], bool)
    for index, image in enumerate(hu):
        dense = image > _AIR_HU
        in_slices[index] = dense.any()
        in_rows |= dense.any(axis=1)
        in_columns |= dense.any(axis=0)
    if not in_slices.any():
        return None
    spans = [np.flatnonzero(present) for present in (in_slices, in_rows, in_columns)]
    return tuple(slice(int(span[0]), int(span[-1]) + 1) for span in spans)  # type: ignore[return-value]


def _distance_inside(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it.

    The ``edt`` package (seung-lab) gives scipy's Euclidean distance transform ten
    times faster and in float32, which matters on 300-slice series.
    """
    return edt.edt(mask, anisotropy=spacing, black_border=False, parallel=1)


def _intracranial_space(hu: np.ndarray, smoothed: np.ndarray, spacing: tuple[float, ...],
                        s: ThresholdParameters) -> np.ndarray:
    """Soft tissue enclosed by the skull: opened, largest 3-D component, holes filled."""
    bone = ndimage.binary_dilation(hu > s.bone_hu, iterations=1)
    soft = (smoothed >= _SOFT_TISSUE_HU[0]) & (smoothed <= _SOFT_TISSUE_HU[1]) & ~bone
    # Opening by distance: erode by opening_mm, keep the largest piece, grow it back
    # inside the soft tissue. Thin bridges (scalp, neck through the foramen) are cut.
    labels, count = ndimage.label(_distance_inside(soft, spacing) > s.opening_mm)
    if count == 0:
        return np.zeros(hu.shape, bool)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    space = (_distance_inside(labels != largest, spacing) <= s.opening_mm) & soft
    # Per slice: anything the intracranial space encloses (hyperdense lesions beyond the
    # soft-tissue range, calcifications) belongs to it.
    for index in range(space.shape[0]):
        space[index] = ndimage.binary_fill_holes(space[index])
    return space


def _upsample(coarse: np.ndarray, factors: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling of a strided array back onto the full grid."""
    for axis, factor in enumerate(factors):
        if factor > 1:
            coarse = np.repeat(coarse, factor, axis=axis)
    return coarse[: shape[0], : shape[1], : shape[2]]
