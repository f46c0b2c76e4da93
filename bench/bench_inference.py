"""Preprocessing and Multimodal CNN Model 2 inference time for one 300-slice head CT.

Synthetic series (not anatomy): 300 axial slices of 512 x 512, 0.45 mm pixels, 0.625 mm
slices, with an ellipsoid 'hematoma' mask. Model: the published Multimodal CNN Model 2
(256 x 256 x 80 x 1 + 5 clinical values, ~34.9 M parameters) with random weights (timing
only). Figures are printed as ratios against references measured in the same run: a
copy of one 256 x 256 x 80 float32 array (the model input), a large float32 matrix
product through the same backend (the practical peak FLOP rate), and the preprocessing
itself; the CPU's nominal peak (cores x clock x FMA width from /proc/cpuinfo) is printed
beside it.

Preprocessing is timed twice: ``hematoma_image`` (what the node runs: the CT resampled
only where the mask is) and ``preprocess_case`` (the whole CT resampled: the cost of a
mask as large as the head, the worst case).

``--parity`` also runs the authors' own preprocessing (tests/support/tanioka_reference.py,
needs the ``test`` extra for dicom2nifti) on a phantom at the published geometry and
prints how closely ours matches it, and how long theirs takes.

Usage (CPU, e.g. the 2-core dev machine):
    KERAS_BACKEND=tensorflow .venv/bin/python -m bench.bench_inference --device cpu [--parity]
GPU host (the device tool's machine; install the `gpu` extra after removing
tensorflow-cpu, which provides the same module, or run with a jax/torch backend that
sees the GPU):
    KERAS_BACKEND=tensorflow .venv/bin/python -m bench.bench_inference --device gpu --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from domain.imaging import CTVolume, HematomaMask
from inference.expansion_predictor import resolve_device
from inference.tanioka_models import build_multimodal_cnn_model2
from inference.tanioka_preprocessing import hematoma_image, preprocess_case


def synthetic_series(slices: int = 300) -> tuple[CTVolume, HematomaMask]:
    rng = np.random.default_rng(0)
    hu = rng.normal(35, 8, (slices, 512, 512)).astype(np.float32)
    z, y, x = np.ogrid[:slices, :512, :512]
    blob = ((z - slices * 0.6) / 40) ** 2 + ((y - 230) / 50) ** 2 + ((x - 300) / 35) ** 2 <= 1
    hu[blob] = 65
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = (0, 0, 0.625), (0, 0.45, 0), (0.45, 0, 0)
    vol = CTVolume(hu=hu, affine_lps=affine, spacing_mm=(0.625, 0.45, 0.45),
                   sop_instance_uids=tuple(f"2.25.{i}" for i in range(slices)),
                   series_instance_uid="2.25.1", study_instance_uid="2.25.2")
    return vol, HematomaMask(mask=blob, method_name="synthetic", method_version="0")


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def inference_flops(model: keras.Model) -> float:
    """Floating-point operations of one forward pass (a multiply-add counts as two):
    Conv3D and Dense layers, from their output shapes; the rest is negligible."""
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D):
            kernel = layer.kernel.shape  # (kh, kw, kd, c_in, c_out)
            outputs = float(np.prod(layer.output.shape[1:4]))
            total += 2.0 * float(np.prod(kernel)) * outputs
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * float(np.prod(layer.kernel.shape))
    return total


def measured_matmul_flops(device: str, size: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of the fastest of ``repeats`` float32 matrix products on ``device`` through
    the Keras backend (the library the model's convolutions run in): the practical peak
    of dense arithmetic here. The fastest, not the median: other work on a shared host
    only ever slows a run down."""
    a = np.random.default_rng(2).random((size, size), dtype=np.float32)
    with keras.device(device):
        x = keras.ops.convert_to_tensor(a)
        keras.ops.convert_to_numpy(keras.ops.matmul(x, x))  # warm up threads and caches
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            keras.ops.convert_to_numpy(keras.ops.matmul(x, x))
            times.append(time.perf_counter() - t0)
    return 2.0 * size ** 3 / min(times)


def nominal_peak_flops() -> tuple[float | None, str]:
    """vCPUs x clock x float32 FLOP per cycle from the CPU flags (two FMA units of 16
    lanes with AVX-512, of 8 with AVX2): an upper bound, since cloud vCPUs may be
    hyperthreads sharing one core's units, and the clock is the one /proc/cpuinfo shows."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo"
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    mhz = [float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    if not mhz:
        return None, "no clock in /proc/cpuinfo"
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags and "fma" in flags else 16
    cpus = os.cpu_count() or 1
    unit = "AVX-512" if per_cycle == 64 else "AVX2" if per_cycle == 32 else "SSE"
    how = f"{cpus} vCPU x {max(mhz):.0f} MHz x {per_cycle} FLOP/cycle ({unit} FMA)"
    return cpus * max(mhz) * 1e6 * per_cycle, how


def parity_at_published_geometry() -> None:
    """Ours against the authors' preprocessing on a 512 x 512 phantom (tests/support)."""
    import pydicom

    from inference.series_to_volume import volume_from_datasets
    from tests.support.phantoms import make_head_ct_series
    from tests.support.tanioka_reference import authors_nifti_pair, reference_input

    with tempfile.TemporaryDirectory() as folder:
        series = make_head_ct_series(Path(folder) / "dicom", slices=72, rows=512, pixel_mm=0.45,
                                     slice_mm=2.5)
        ct, mask = authors_nifti_pair(Path(folder) / "dicom", series.hematoma, Path(folder) / "nifti")
        t_theirs, reference = _timed(lambda: reference_input(ct, mask), 1)
        volume = volume_from_datasets([pydicom.dcmread(p) for p in series.paths])
        truth = HematomaMask(series.hematoma, "phantom truth", "0")
        t_ours, ours = _timed(lambda: preprocess_case(volume, truth), 1)
        t_fast, fast = _timed(lambda: hematoma_image(volume, truth), 1)
    corr = float(np.corrcoef(ours.ct.ravel(), reference.ct.ravel())[0, 1])
    corr_h = float(np.corrcoef(fast[..., 0].ravel(), reference.hematoma.ravel())[0, 1])
    dice = float(2 * np.sum(ours.mask * reference.mask) / (ours.mask.sum() + reference.mask.sum()))
    print(f"parity at 256x256x80 (72 slices of 2.5 mm, 512 x 512 of 0.45 mm): CT correlation "
          f"{corr:.6f}, hematoma image correlation {corr_h:.6f}, mask Dice {dice:.4f}, "
          f"max |difference| {np.abs(ours.ct - reference.ct).max():.1e}")
    print(f"authors' implementation {t_theirs:.1f} s = {t_theirs / t_ours:.0f} x ours for the whole "
          f"CT ({t_ours:.2f} s), {t_theirs / t_fast:.0f} x the node's input ({t_fast:.2f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    ap.add_argument("--repeats", type=int, default=1, help="timed inferences after the warm-up")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--parity", action="store_true", help="also compare with the authors' code")
    args = ap.parse_args()

    device = resolve_device(args.device)
    ref_array = np.random.default_rng(1).random((256, 256, 80), dtype=np.float32)
    t_copy, _ = _timed(lambda: ref_array.copy(), 50)
    vol, mask = synthetic_series(args.slices)
    hematoma_image(vol, mask)  # the zoom weights are computed once per process
    t_pre, image = _timed(lambda: hematoma_image(vol, mask), 3)
    t_whole, _ = _timed(lambda: preprocess_case(vol, mask), 3)
    matmul_flops = measured_matmul_flops(device)
    nominal, nominal_how = nominal_peak_flops()
    clinical = np.zeros((1, 5), np.float32)
    with keras.device(device):
        t0 = time.perf_counter()
        model = build_multimodal_cnn_model2()
        t_build = time.perf_counter() - t0
        x = [np.asarray(image)[None], clinical]
        t_first, _ = _timed(lambda: model.predict_on_batch(x), 1)
        t_inf, _ = _timed(lambda: model.predict_on_batch(x), args.repeats)
    flops = inference_flops(model)
    print(f"backend={keras.backend.backend()} device={device} cores={os.cpu_count()} "
          f"slices={args.slices} params={model.count_params()}")
    print(f"reference: copy of one 256x256x80 float32 array = {t_copy * 1e3:.2f} ms")
    print(f"preprocessing, node input ({args.slices} slices -> 256x256x80) = {t_pre / t_copy:8.0f} x copy "
          f"({t_pre:.2f} s)")
    print(f"preprocessing, whole CT (mask as large as the head)    = {t_whole / t_copy:8.0f} x copy "
          f"({t_whole:.2f} s)")
    print(f"model build                                    = {t_build / t_pre:10.2f} x preprocessing")
    print(f"first inference (incl. tracing)                = {t_first / t_pre:10.2f} x preprocessing")
    print(f"Multimodal Model 2 inference (median of {args.repeats})     = {t_inf / t_pre:10.2f} x preprocessing "
          f"= {t_inf / t_copy:.0f} x copy ({t_inf:.2f} s)")
    print(f"preprocessing + inference                      = {(t_pre + t_inf) / t_copy:10.0f} x copy "
          f"({t_pre + t_inf:.2f} s)")
    rate = flops / t_inf
    print(f"inference: {flops / 1e12:.2f} TFLOP per case (Conv3D and Dense multiply-adds x 2), "
          f"{rate / 1e9:.1f} GFLOP/s")
    print(f"  = {rate / matmul_flops:.2f} of a float32 matrix product on {device} in this run "
          f"({matmul_flops / 1e9:.1f} GFLOP/s, 4096 x 4096, {keras.backend.backend()}, best of 5)")
    if nominal is not None:
        print(f"  = {rate / nominal:.2f} of the nominal peak {nominal / 1e9:.0f} GFLOP/s ({nominal_how})")
    if device.startswith("cpu"):
        print("GPU figures: not measured here; run with --device gpu on the GPU host "
              "(see the module docstring).")
    if args.parity:
        parity_at_published_geometry()


if __name__ == "__main__":
    main()
