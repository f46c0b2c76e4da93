"""Preprocessing and Multimodal CNN Model 2 inference time for one 300-slice head CT.

Synthetic series (not anatomy): 300 axial slices of 512 x 512, 0.45 mm pixels, 0.625 mm
slices, with an ellipsoid 'hematoma' mask. Model: the published Multimodal CNN Model 2
(256 x 256 x 80 x 1 + 5 clinical values, ~34.9 M parameters) with random weights (timing
only). Figures are printed as ratios against references measured in the same run: a
copy of one 256 x 256 x 80 float32 array (the model input), and the preprocessing itself.

Usage (CPU, e.g. the 2-core dev machine):
    KERAS_BACKEND=tensorflow .venv/bin/python -m bench.bench_inference --device cpu
GPU host (the device tool's machine; install the `gpu` extra after removing
tensorflow-cpu, which provides the same module, or run with a jax/torch backend that
sees the GPU):
    KERAS_BACKEND=tensorflow .venv/bin/python -m bench.bench_inference --device gpu --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from domain.imaging import CTVolume, HematomaMask
from inference.expansion_predictor import resolve_device
from inference.tanioka_models import build_multimodal_cnn_model2
from inference.tanioka_preprocessing import hematoma_image


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


def _timed(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    ap.add_argument("--repeats", type=int, default=1, help="timed inferences after the warm-up")
    ap.add_argument("--slices", type=int, default=300)
    args = ap.parse_args()

    device = resolve_device(args.device)
    ref_array = np.random.default_rng(1).random((256, 256, 80), dtype=np.float32)
    t_copy, _ = _timed(lambda: ref_array.copy(), 50)
    vol, mask = synthetic_series(args.slices)
    t_pre, image = _timed(lambda: hematoma_image(vol, mask), 2)
    clinical = np.zeros((1, 5), np.float32)
    with keras.device(device):
        t0 = time.perf_counter()
        model = build_multimodal_cnn_model2()
        t_build = time.perf_counter() - t0
        x = [np.asarray(image)[None], clinical]
        t_first, _ = _timed(lambda: model.predict_on_batch(x), 1)
        t_inf, _ = _timed(lambda: model.predict_on_batch(x), args.repeats)
    print(f"backend={keras.backend.backend()} device={device} cores={os.cpu_count()} "
          f"slices={args.slices} params={model.count_params()}")
    print(f"reference: copy of one 256x256x80 float32 array = {t_copy * 1e3:.2f} ms")
    print(f"preprocessing ({args.slices} slices -> 256x256x80)   = {t_pre / t_copy:10.0f} x copy "
          f"({t_pre:.2f} s)")
    print(f"model build                                    = {t_build / t_pre:10.2f} x preprocessing")
    print(f"first inference (incl. tracing)                = {t_first / t_pre:10.2f} x preprocessing")
    print(f"Multimodal Model 2 inference (median of {args.repeats})     = {t_inf / t_pre:10.2f} x preprocessing "
          f"= {t_inf / t_copy:.0f} x copy ({t_inf:.2f} s)")
    print(f"preprocessing + inference                      = {(t_pre + t_inf) / t_copy:10.0f} x copy "
          f"({t_pre + t_inf:.2f} s)")
    if device.startswith("cpu"):
        print("GPU figures: not measured here; run with --device gpu on the GPU host "
              "(see the module docstring).")


if __name__ == "__main__":
    main()
