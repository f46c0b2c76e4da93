"""``scipy.ndimage.zoom`` along one axis, as a matrix, applied only where it is needed.

The Tanioka preprocessing resamples with ``ndimage.zoom`` (cubic spline, ``mode=
"constant"``, ``grid_mode=False``) on whole volumes: the slice axis first, then both
in-plane axes, then a resize. A zoom is linear, and a multi-axis zoom on a grid is the
product of one-axis zooms (the spline prefilter and the evaluation both factor by
axis), so each step is one matrix per axis. ``zoom_weights`` takes that matrix from
scipy itself (the zoom of each unit vector), so boundary handling and sample positions
are scipy's, not a re-derivation. Each row's weight dies off geometrically away from
its sample position (the cubic spline's pole is -0.268), so a row only needs the
source samples within ``support`` of it: output rows can be computed from a cropped
source, and a volume can be resampled in float32 one block of rows at a time with
dense BLAS products on short bands.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

# Weights below this fraction of a row's largest are left out: 0.268^17 ~ 2e-10, so a
# row keeps about 17 samples beyond its 4-sample footprint on each side.
_NEGLIGIBLE = 1e-10
_ROWS_PER_BLOCK = 32


@lru_cache(maxsize=32)
def zoom_weights(n_in: int, n_out: int, order: int = 3) -> np.ndarray:
    """The (n_out, n_in) matrix of ``ndimage.zoom`` from n_in to n_out samples (float64).

    Column k is the zoom of the k-th unit vector: exactly what scipy computes, since its
    zoom is linear in the input. Read-only (cached).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"cannot zoom {n_in} samples to {n_out}")
    if n_in == 1:
        weights = np.ones((n_out, 1))
    else:
        # A zoom factor of 1 along the second axis reproduces it exactly, so each column
        # of the result is the one-axis zoom of one unit vector.
        weights = ndimage.zoom(np.eye(n_in), (n_out / n_in, 1.0), order=order, mode="constant",
                               cval=0.0, grid_mode=False)
        if weights.shape != (n_out, n_in):
            raise ValueError(f"zoom of {n_in} samples gave {weights.shape[0]}, not {n_out}")
    weights.setflags(write=False)
    return weights


def _counts(weights: np.ndarray) -> np.ndarray:
    magnitude = np.abs(weights)
    return magnitude > _NEGLIGIBLE * magnitude.max(axis=1, keepdims=True)


@lru_cache(maxsize=32)
def _float32_weights(n_in: int, n_out: int, order: int) -> np.ndarray:
    """The weights that count, in float32; the rest exactly 0. The tails would otherwise
    become float32 subnormals, which slow every product they enter about tenfold."""
    weights = zoom_weights(n_in, n_out, order)
    out = np.where(_counts(weights), weights, 0.0).astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=32)
def support(n_in: int, n_out: int, order: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per output row, the first and one-past-last source sample with a weight that counts."""
    counts = _counts(zoom_weights(n_in, n_out, order))
    first = np.argmax(counts, axis=1)
    last = n_in - np.argmax(counts[:, ::-1], axis=1)
    first.setflags(write=False)
    last.setflags(write=False)
    return first, last


def rows_touching(n_in: int, n_out: int, start: int, stop: int, order: int = 3) -> tuple[int, int]:
    """The output rows whose support meets source samples [start, stop); (0, 0) if none."""
    first, last = support(n_in, n_out, order)
    hit = np.flatnonzero((first < stop) & (last > start))
    if hit.size == 0:
        return 0, 0
    return int(hit[0]), int(hit[-1]) + 1


def source_span(n_in: int, n_out: int, start: int, stop: int, order: int = 3) -> tuple[int, int]:
    """The source samples output rows [start, stop) need; (0, 0) for no rows."""
    if stop <= start:
        return 0, 0
    first, last = support(n_in, n_out, order)
    return int(first[start:stop].min()), int(last[start:stop].max())


def apply_along(data: np.ndarray, axis: int, n_in: int, n_out: int, rows: tuple[int, int],
                data_start: int, order: int = 3, reversed_input: bool = False) -> np.ndarray:
    """Output rows ``rows`` of the zoom n_in -> n_out along ``axis`` of ``data`` (float32).

    ``data`` holds source samples [data_start, data_start + data.shape[axis]) along
    ``axis`` (it must cover ``source_span`` of the rows), or, with ``reversed_input``,
    holds them in reverse order (sample i of the zoom's input at index n_in - 1 - i of
    the full axis, ``data_start`` counting on that full axis). Rows come out in the
    zoom's order either way. Each block of rows is one BLAS product with the band of
    samples it needs, on ``data`` as it lies in memory (no transposed copy).
    """
    row_start, row_stop = rows
    weights = _float32_weights(n_in, n_out, order)
    first, last = support(n_in, n_out, order)
    # One large product per block of rows, with the zoomed axis first (a middle axis is
    # moved there by one copy): thousands of small products per call would leave BLAS
    # threads waiting on each other, badly so on a busy host.
    last_axis = axis == data.ndim - 1
    moved = np.moveaxis(data, axis, -1 if last_axis else 0)
    moved = np.ascontiguousarray(moved, dtype=np.float32)
    n_data = moved.shape[-1 if last_axis else 0]
    flat_in = moved.reshape(-1, n_data) if last_axis else moved.reshape(n_data, -1)
    n_rows = row_stop - row_start
    flat_out = np.empty((flat_in.shape[0], n_rows) if last_axis else (n_rows, flat_in.shape[1]),
                        np.float32)
    for block in range(row_start, row_stop, _ROWS_PER_BLOCK):
        block_stop = min(block + _ROWS_PER_BLOCK, row_stop)
        lo, hi = int(first[block:block_stop].min()), int(last[block:block_stop].max())
        band = weights[block:block_stop, lo:hi]
        if reversed_input:
            lo, hi, band = n_in - hi, n_in - lo, band[:, ::-1]
        if lo < data_start or hi > data_start + n_data:
            raise ValueError(f"rows {block}-{block_stop} need samples {lo}-{hi}, data holds "
                             f"{data_start}-{data_start + n_data}")
        target = slice(block - row_start, block_stop - row_start)
        if last_axis:
            window = flat_in[:, lo - data_start:hi - data_start]
            flat_out[:, target] = window @ np.ascontiguousarray(band.T)
        else:
            flat_out[target] = np.ascontiguousarray(band) @ flat_in[lo - data_start:hi - data_start]
    out = flat_out.reshape(*moved.shape[:-1], n_rows) if last_axis else flat_out.reshape(
        n_rows, *moved.shape[1:])
    return np.moveaxis(out, -1 if last_axis else 0, axis)
