"""Preprocessing of Tanioka et al. 2024 (Sci Rep): CT + mask -> intraparenchymal hematoma image.

The authors' steps, from their notebooks (Conversion_from_DICOM_to_NIfTI, CNN_Model_2,
Multimodal_Model_2); tests/test_tanioka_reference.py runs a re-implementation of them
beside this module on phantoms and NIfTI files in five orientations:

0. DICOM -> NIfTI with dicom2nifti: LAS (x to the patient's left, y anterior, z up,
   slice 0 the lowest); a gantry-tilted series resampled onto an orthogonal grid
   (``inference/tanioka_layout.py``).
1. HU outside [0, 100] set to 0, then divided by 100.
2. Cubic-spline zoom along z by (slice spacing rounded to 0.01 mm) / 2 mm; keep the last
   80 slices, the most superior (the top of the head is slice 79), or pad zeros below.
3. Cubic zoom in-plane to 0.5 mm pixels; pad with zeros about the centre to 512 (513
   when the zoomed size is odd); clip to [0, 1].
4. Cubic zoom by 256 / 512; clip to [0, 1].
5. Rotate in-plane by 90 degrees (``ndimage.rotate(image, 90, reshape=False)``, which is
   ``np.rot90`` on these square images).

The mask goes through steps 0 and 2-5, re-binarised at 0.2 after each zoom. The model
input is CT x mask, (256, 256, 80, 1). Every zoom is scipy's ``ndimage.zoom`` (order 3,
``mode="constant"``, first and last samples mapped onto first and last, so a reslice
lands within a few per cent of 2 mm), with the output sizes scipy computes from the
float32 header spacings.

Where we differ, only where their code cannot run or is ambiguous:

- A zoomed field wider than the canvas (over 256 mm) is cropped about the centre;
  their padding step fails on it.
- Each in-plane axis uses its own pixel spacing (theirs uses x for both: the same for
  square pixels).
- dicom2nifti resamples only tilts beyond its orthogonality tolerance (about 3
  degrees) and keeps smaller ones sheared; we resample any tilt that moves the last
  slice by over a twentieth of a pixel.

How it is fast (``bench/bench_inference.py``): every zoom is one matrix per axis
(``inference/spline_zoom.py``), applied in float32 only to the rows a later step uses.
``hematoma_image`` runs the mask first, on the box around the hematoma, and the CT only
where the resulting mask is set: the input is zero everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domain.imaging import CTVolume, HematomaMask
from inference.spline_zoom import apply_along, rows_touching, source_span, support
from inference.tanioka_layout import Box, LasView

ALGORITHM_NAME = "Tanioka 2024 preprocessing"
# 2.0: the authors' slice order (vertex last), cubic spline with clipping, dicom2nifti's
# LAS layout and tilt correction, checked against a re-implementation of their code.
ALGORITHM_VERSION = "2.0"

_AIR_HU = -1000.0  # dicom2nifti's padding outside a resampled series, as the authors set it


@dataclass(frozen=True)
class TaniokaGeometry:
    """Geometry of the preprocessing; the defaults are the published values.

    Tests pass small values (e.g. 4 mm pixels on a 64 px canvas) to stay fast.
    """

    hu_min: float = 0.0
    hu_max: float = 100.0
    slice_mm: float = 2.0
    n_slices: int = 80
    pixel_mm: float = 0.5
    canvas_px: int = 512
    out_px: int = 256
    mask_threshold: float = 0.2
    spline_order: int = 3
    # The authors round the header's slice spacing to this many decimals before reslicing.
    spacing_decimals: int = 2

    def __post_init__(self) -> None:
        if self.slice_mm <= 0 or self.pixel_mm <= 0:
            raise ValueError("slice_mm and pixel_mm must be positive")
        if min(self.n_slices, self.canvas_px, self.out_px) < 1:
            raise ValueError("sizes must be at least 1")

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """Model input shape (H, W, slices, channel)."""
        return (self.out_px, self.out_px, self.n_slices, 1)


PUBLISHED_GEOMETRY = TaniokaGeometry()


def geometry_for_shape(input_shape: tuple[int, ...]) -> TaniokaGeometry:
    """Geometry for a model input (H, W, slices, 1) with the published field of view.

    The published input keeps a 256 mm square (512 px of 0.5 mm) and a 160 mm slab
    (80 slices of 2 mm); smaller test models keep that field of view with coarser
    voxels. ``geometry_for_shape((256, 256, 80, 1))`` is the published geometry.
    """
    height, width, n_slices = input_shape[0], input_shape[1], input_shape[2]
    if height != width:
        raise ValueError(f"the published pipeline makes square images, got {height}x{width}")
    fov_mm = PUBLISHED_GEOMETRY.canvas_px * PUBLISHED_GEOMETRY.pixel_mm
    slab_mm = PUBLISHED_GEOMETRY.n_slices * PUBLISHED_GEOMETRY.slice_mm
    canvas = 2 * height
    return TaniokaGeometry(slice_mm=slab_mm / n_slices, n_slices=n_slices,
                           pixel_mm=fov_mm / canvas, canvas_px=canvas, out_px=height)


@dataclass(frozen=True)
class PreprocessedCase:
    """CT and mask after the published geometry, each (H, W, slices) float32."""

    ct: np.ndarray
    mask: np.ndarray

    @property
    def hematoma_image(self) -> np.ndarray:
        """The "intraparenchymal hematoma image": CT x mask, (H, W, slices, 1) float32."""
        return (self.ct * self.mask)[..., np.newaxis].astype(np.float32)


def window_hu(hu: np.ndarray, geometry: TaniokaGeometry = PUBLISHED_GEOMETRY) -> np.ndarray:
    """HU outside [hu_min, hu_max] -> 0, then scaled by hu_max (published: /100)."""
    out = np.where((hu >= geometry.hu_min) & (hu <= geometry.hu_max), hu, 0.0)
    return (out / geometry.hu_max).astype(np.float32)


@dataclass(frozen=True)
class _Axis:
    """One LAS axis: zoom n_source -> n_zoomed, placed at ``offset`` on a canvas of
    n_canvas samples (a negative offset crops), then zoomed to n_out (or not, for z)."""

    n_source: int
    n_zoomed: int
    offset: int
    n_canvas: int
    n_out: int
    resize: bool

    def zoomed_rows(self, canvas: tuple[int, int]) -> tuple[int, int]:
        start, stop = max(canvas[0] - self.offset, 0), min(canvas[1] - self.offset, self.n_zoomed)
        return (start, stop) if stop > start else (0, 0)

    def canvas_span(self, out: tuple[int, int]) -> tuple[int, int]:
        if not self.resize:
            return out
        return source_span(self.n_canvas, self.n_out, *out)

    def source_span(self, out: tuple[int, int]) -> tuple[int, int]:
        return source_span(self.n_source, self.n_zoomed, *self.zoomed_rows(self.canvas_span(out)))

    def out_rows_touching(self, source: tuple[int, int]) -> tuple[int, int]:
        """Output rows that can see source samples [start, stop)."""
        rows = rows_touching(self.n_source, self.n_zoomed, *source)
        canvas = (rows[0] + self.offset, rows[1] + self.offset)
        canvas = (max(canvas[0], 0), min(canvas[1], self.n_canvas))
        if canvas[1] <= canvas[0]:
            return 0, 0
        if not self.resize:
            return canvas
        first, last = support(self.n_canvas, self.n_out)
        hit = np.flatnonzero((first < canvas[1]) & (last > canvas[0]))
        return (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, 0)


def _header_zoom(spacing: float, target: float, decimals: int | None = None) -> np.float32:
    """The authors' zoom factor, in the float32 a NIfTI header gives them."""
    value = np.float32(spacing)
    if decimals is not None:
        value = np.round(value, decimals)
    return np.float32(value / np.float32(target))


def _axes(view: LasView, geometry: TaniokaGeometry) -> tuple[_Axis, _Axis, _Axis]:
    axes = []
    for las_axis in (0, 1):
        n = view.shape[las_axis]
        factor = _header_zoom(view.spacing_mm[las_axis], geometry.pixel_mm)
        zoomed = int(np.round(np.float32(n) * factor))
        canvas = geometry.canvas_px
        if zoomed > canvas + 1:
            offset, n_canvas = -((zoomed - canvas) // 2), canvas
        else:
            offset = (canvas + 1 - zoomed) // 2
            n_canvas = zoomed + 2 * offset
        axes.append(_Axis(n, zoomed, offset, n_canvas, geometry.out_px, resize=True))
    nz = view.shape[2]
    factor = _header_zoom(view.spacing_mm[2], geometry.slice_mm, geometry.spacing_decimals)
    zoomed = max(int(np.round(np.float32(nz) * factor)), 1)
    # Keep the last n_slices (the most superior), or pad zeros below: offset = n - zoomed.
    axes.append(_Axis(nz, zoomed, geometry.n_slices - zoomed, geometry.n_slices,
                      geometry.n_slices, resize=False))
    return axes[0], axes[1], axes[2]


def _windowed(window: np.ndarray, geometry: TaniokaGeometry) -> np.ndarray:
    """Step 1 on a box of HU, a few slices at a time (they stay in cache)."""
    out = np.empty(window.shape, np.float32)
    for start in range(0, window.shape[0], 8):
        out[start:start + 8] = window_hu(window[start:start + 8], geometry)
    return out


def _resample(view: LasView, array: np.ndarray, axes: tuple[_Axis, _Axis, _Axis], out: Box,
              geometry: TaniokaGeometry, binary: bool) -> np.ndarray:
    """The output box ``out`` (x, y, z) of the CT (HU) or the mask (``binary``).

    Works in the memory layout of the sampled box (``LasView.memory_axes``): each LAS
    axis is zoomed along the array axis that holds it; the small result is transposed
    to (x, y, z) at the end.
    """
    result = np.zeros(tuple(stop - start for start, stop in out), np.float32)
    canvas = [axis.canvas_span(o) for axis, o in zip(axes, out)]
    zoomed = [axis.zoomed_rows(c) for axis, c in zip(axes, canvas)]
    if any(stop <= start for start, stop in zoomed):
        return result  # the box lies wholly in the zero padding
    source: Box = tuple(  # type: ignore[assignment]
        source_span(a.n_source, a.n_zoomed, *z) for a, z in zip(axes, zoomed))
    window = view.sample(array, source, 0.0 if binary else _AIR_HU)
    if not binary:
        data = _windowed(window, geometry)
    elif view.resampled:
        data = (window >= 0.5).astype(np.float32)  # a mask drawn on the resampled NIfTI
    else:
        data = window.astype(np.float32)
    memory = view.memory_axes

    def cut(values: np.ndarray) -> np.ndarray:
        if binary:
            return (values >= geometry.mask_threshold).astype(np.float32)
        return np.clip(values, 0.0, 1.0, out=values)

    order = geometry.spline_order
    for las_axis in (2, 0, 1):  # the authors' order: reslice, then in-plane
        axis = axes[las_axis]
        data = apply_along(data, memory[las_axis], axis.n_source, axis.n_zoomed, zoomed[las_axis],
                           view.memory_start(las_axis, source), order, view.flips[las_axis])
        if binary and las_axis == 2:
            data = cut(data)  # the mask is re-binarised right after the reslice
    # The zoomed rows on the canvas window, zero padding around them; the authors clip
    # (or binarise) here, after the padding.
    placed_shape = [0, 0, 0]
    at = [slice(None)] * 3
    for las_axis, (z, axis, c) in enumerate(zip(zoomed, axes, canvas)):
        placed_shape[memory[las_axis]] = c[1] - c[0]
        at[memory[las_axis]] = slice(z[0] + axis.offset - c[0], z[1] + axis.offset - c[0])
    placed = np.zeros(placed_shape, np.float32)
    placed[tuple(at)] = data
    data = cut(placed)
    for las_axis in (0, 1):
        axis = axes[las_axis]
        if axis.resize:
            data = apply_along(data, memory[las_axis], axis.n_canvas, axis.n_out, out[las_axis],
                               canvas[las_axis][0], order)
    data = cut(data)
    result[...] = np.transpose(data, memory)
    return result


def _rotate(array: np.ndarray) -> np.ndarray:
    """Step 5: ``ndimage.rotate(array, 90, reshape=False)`` for a square in-plane size."""
    return np.ascontiguousarray(np.rot90(array, k=1, axes=(0, 1)))


def _full_box(geometry: TaniokaGeometry) -> Box:
    return ((0, geometry.out_px), (0, geometry.out_px), (0, geometry.n_slices))


def preprocess_case(volume: CTVolume, mask: HematomaMask,
                    geometry: TaniokaGeometry = PUBLISHED_GEOMETRY) -> PreprocessedCase:
    """Run the published preprocessing on a CT and its intraparenchymal mask.

    Parameters
    ----------
    volume:
        The CT, stored in any axis order, possibly gantry-tilted (sheared affine).
    mask:
        The intraparenchymal hematoma mask on the volume's grid.
    geometry:
        Target geometry; defaults to the published one (output 256 x 256 x 80).

    Returns
    -------
    PreprocessedCase
        CT in [0, 1] and binary mask, both (H, W, slices) as the authors' arrays held
        them: rotated LAS, slice index growing towards the vertex. ``hematoma_image``
        (the model input) is equal to the module's ``hematoma_image``, which skips the
        CT outside the mask.
    """
    if mask.mask.shape != volume.hu.shape:
        raise ValueError(f"mask shape {mask.mask.shape} != volume shape {volume.hu.shape}")
    view = LasView.of(volume)
    axes = _axes(view, geometry)
    return PreprocessedCase(
        ct=_rotate(_resample(view, volume.hu, axes, _full_box(geometry), geometry, binary=False)),
        mask=_rotate(_mask_only(view, mask.mask, axes, geometry)[0]),
    )


def hematoma_image(volume: CTVolume, mask: HematomaMask,
                   geometry: TaniokaGeometry = PUBLISHED_GEOMETRY) -> np.ndarray:
    """The model input (H, W, slices, 1) float32: preprocessed CT x preprocessed mask.

    The mask is resampled only around the hematoma (its zooms can reach no further,
    beyond weights below 1e-10), and the CT only where that mask is set.
    """
    if mask.mask.shape != volume.hu.shape:
        raise ValueError(f"mask shape {mask.mask.shape} != volume shape {volume.hu.shape}")
    view = LasView.of(volume)
    axes = _axes(view, geometry)
    out, set_box = _mask_only(view, mask.mask, axes, geometry)
    if set_box is not None:
        within = tuple(slice(start, stop) for start, stop in set_box)
        out[within] *= _resample(view, volume.hu, axes, set_box, geometry, binary=False)
    return _rotate(out)[..., np.newaxis]


def _mask_only(view: LasView, mask: np.ndarray, axes: tuple[_Axis, _Axis, _Axis],
               geometry: TaniokaGeometry) -> tuple[np.ndarray, Box | None]:
    """The preprocessed mask (x, y, z), computed on the output rows the hematoma can
    reach, and the box of its set voxels (None when empty)."""
    out = np.zeros(geometry.output_shape[:3], np.float32)
    source_box = view.box_of(mask)
    if source_box is None:
        return out, None
    reach: Box = tuple(  # type: ignore[assignment]
        axis.out_rows_touching(s) for axis, s in zip(axes, source_box))
    if any(stop <= start for start, stop in reach):
        return out, None
    out[tuple(slice(start, stop) for start, stop in reach)] = _resample(
        view, mask, axes, reach, geometry, binary=True)
    return out, _nonzero_box(out)


def _nonzero_box(array: np.ndarray) -> Box | None:
    ranges = []
    for axis in range(array.ndim):
        hit = np.flatnonzero(array.any(axis=tuple(a for a in range(array.ndim) if a != axis)))
        if hit.size == 0:
            return None
        ranges.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(ranges)  # type: ignore[return-value]
