"""Speed of the blast-ct masking method, and what the CPU default ensemble costs.

1. Reference, measured in the same run: one float32 numpy matmul of 2048 x 2048 (17.2
   GFLOP). Every time is printed in seconds and as a multiple of it ("x matmul").
2. Two synthetic series (tests/support/phantoms.py, 512 x 512 at 0.45 mm, a 27 mL
   basal ganglia hematoma): 300 slices of 0.625 mm and 32 slices of 5 mm. For each:
   preparation (orientation, intracranial box, 1 mm resampling, windowing), one model
   (first call, with the network's build and tracing, then a second member, warm), the
   CPU default ensemble end to end (``BlastCtMasker.labels``) and the 12-model ensemble
   estimated as preparation + 12 warm models.
3. Agreement with all 12 of every ensemble of 1 to (what fits + 1) members, on the
   fixture volumes (synthetic HU around the real scan_0 lesion map,
   ../shared/data/blast_ct_v1): the parity fixture CT (2 x 0.8 x 0.8 mm crop) and the
   whole scan_0 head at 1 mm. Dice per class (the 12-model labels as reference), best /
   median / worst over subsets, the phantom's true volumes beside the 12 models', and
   the subset this run recommends as CPU default: the most members that fit 2 minutes
   for the slower series, and of those the best mean Dice; then the recommended and the
   configured default's Dice and volumes on each volume.

Usage: .venv/bin/python -m bench.bench_blast_ct [--skip-head]   (about 15 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from domain.imaging import CTVolume
from inference.masking.blast_ct.ensemble import EnsembleRunner
from inference.masking.blast_ct.masker import CPU_DEFAULT_ENSEMBLE, BlastCtMasker
from inference.masking.blast_ct.preparation import PreparedCt, prepare
from inference.masking.blast_ct.weight_files import ENSEMBLE_SIZE, EnsembleMember, load_member
from inference.parameters import BlastCtParameters
from tests.support.blast_ct_phantom import (
    LESION_BOX,
    resample_nearest,
    scan0_head_hu,
    scan0_labels,
)
from tests.support.phantoms import head_hu

BUDGET_S = 120.0
CLASSES = {1: "IPH", 2: "EAH", 3: "oedema", 4: "IVH"}
SERIES = [("300 x 0.625 mm", 300, 0.625, 9.0), ("32 x 5 mm", 32, 5.0, 4.0)]


def volume_of(hu: np.ndarray, spacing: tuple[float, float, float]) -> CTVolume:
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = spacing[2], spacing[1], spacing[0], 1.0
    return CTVolume(np.ascontiguousarray(hu, np.float32), affine, spacing,
                    tuple(str(i) for i in range(hu.shape[0])), "1", "2")


def matmul_seconds() -> float:
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        a @ a
        runs.append(time.perf_counter() - start)
    return min(runs)


def timed(function, *args):  # type: ignore[no-untyped-def]
    """(result, wall seconds, this process's CPU seconds): on a machine shared with other
    work the wall time grows, the CPU time stays that of the work done."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_series(members: dict[int, EnsembleMember],
                 parameters: BlastCtParameters) -> list[tuple[str, float, float]]:
    """Per series: (label, preparation seconds, seconds per model), both as on an idle
    machine: CPU seconds for the (single-threaded) preparation, CPU seconds / 2 for the
    network (two threads on two cores). Wall seconds are printed beside them, and the
    matmul reference is measured again before and after each series, so that sharing
    the machine with other work shows instead of passing for a slower method.
    """
    print(f"\n{'series':16s} {'1 mm box':>12s} {'prep s':>10s} {'model 1':>8s} {'model 2 s':>11s}"
          f" {'default s':>11s} {'matmul ms':>9s} {'model x mm':>10s} {'idle: model':>11s} {'default':>7s}"
          f" {'all 12':>6s}")
    out = []
    runner = EnsembleRunner("cpu:0", parameters.tiles_per_batch)
    default = BlastCtMasker(parameters)
    for label, slices, slice_mm, noise in SERIES:
        hu, _ = head_hu(slices, 512, 0.45, slice_mm, (22.0, 18.0, 16.0), (28.0, 0.0, 0.0), None, noise, seed=3)
        volume = volume_of(np.rint(hu), (slice_mm, 0.45, 0.45))
        del hu

        def prep(v: CTVolume = volume) -> PreparedCt:
            return prepare(v, restrict_to_intracranial_box=True, box_margin_mm=parameters.box_margin_mm,
                           max_tile_voxels=parameters.max_tile_voxels)

        before_s = matmul_seconds()
        prepared, prep_wall, prep_cpu = timed(prep)
        _, first_wall, _ = timed(runner.probability_sum, prepared, [members[1]])
        _, model_wall, model_cpu = timed(runner.probability_sum, prepared, [members[2]])
        _, default_wall, default_cpu = timed(default.labels, volume)
        reference_s = (before_s + matmul_seconds()) / 2
        box = "x".join(str(b - a) for a, b in zip(*prepared.box))
        model_idle = model_cpu / 2
        print(f"{label:16s} {box:>12s} {prep_wall:4.1f}/{prep_cpu:4.1f} {first_wall:8.1f}"
              f" {model_wall:5.1f}/{model_cpu:5.1f} {default_wall:5.1f}/{default_cpu:5.1f}"
              f" {reference_s * 1000:9.0f} {model_wall / reference_s:10.0f} {model_idle:11.1f}"
              f" {default_cpu / 2:7.1f} {prep_cpu + ENSEMBLE_SIZE * model_idle:6.0f}")
        out.append((label, prep_cpu, model_idle))
    print("(wall/CPU seconds; 'idle' columns: CPU seconds / 2, the 2-core wall time without other load)")
    return out


def member_probabilities(volume: CTVolume, members: dict[int, EnsembleMember],
                         box: bool) -> tuple[PreparedCt, dict[int, np.ndarray]]:
    prepared = prepare(volume, restrict_to_intracranial_box=box, box_margin_mm=5.0,
                       max_tile_voxels=75 ** 3)
    runner = EnsembleRunner("cpu:0", 1)
    return prepared, {n: runner.probability_sum(prepared, [m]) for n, m in members.items()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


@dataclass(frozen=True)
class Agreement:
    dice: dict[str, float]        # per class present in the 12-model labels
    volumes_ml: dict[str, float]  # per class, on the 1 mm grid


def agreement(probabilities: dict[int, np.ndarray], subset: tuple[int, ...], full: np.ndarray) -> Agreement:
    ours = np.argmax(sum(probabilities[m] for m in subset), axis=-1)
    return Agreement({name: dice(ours == c, full == c) for c, name in CLASSES.items() if (full == c).any()},
                     {name: float((ours == c).sum()) / 1000 for c, name in CLASSES.items()})


def agreement_volumes(skip_head: bool) -> list[tuple[str, CTVolume, bool, np.ndarray]]:
    """(label, CT, use the intracranial box, truth labels on the CT grid) of each fixture volume."""
    labels, brain = scan0_labels()
    hu = scan0_head_hu(labels, brain)
    spacing = (2.0, 0.8, 0.8)
    volumes = [("fixture CT 2 x 0.8 x 0.8 mm", volume_of(resample_nearest(hu[LESION_BOX], spacing), spacing),
                False, resample_nearest(labels[LESION_BOX], spacing))]
    if not skip_head:
        volumes.append(("scan_0 whole head 1 mm", volume_of(hu, (1.0, 1.0, 1.0)), True, labels))
    return volumes


def bench_agreement(members: dict[int, EnsembleMember], sizes: range,
                    skip_head: bool) -> dict[tuple[int, ...], dict[str, Agreement]]:
    """Agreement with the 12-model labels of every subset of the given sizes, per volume."""
    results: dict[tuple[int, ...], dict[str, Agreement]] = {}
    for label, volume, box, truth in agreement_volumes(skip_head):
        (_, probabilities), seconds, _ = timed(member_probabilities, volume, members, box)
        full = np.argmax(sum(probabilities.values()), axis=-1)
        everything = agreement(probabilities, tuple(members), full)
        truth_ml = {name: float((truth == c).sum()) * volume.voxel_volume_ml for c, name in CLASSES.items()}
        print(f"\n{label}: 12 models in {seconds:.0f} s")
        print("  phantom truth mL: " + ", ".join(f"{n} {v:.1f}" for n, v in truth_ml.items()))
        print("  12 models mL:     " + ", ".join(f"{n} {v:.1f}" for n, v in everything.volumes_ml.items()))
        print(f"{'members':>8s} {'subset':>16s} " + " ".join(f"{n:>7s}" for n in CLASSES.values())
              + "  (Dice with the 12-model labels)")
        for size in sizes:
            rows = []
            for subset in itertools.combinations(range(1, ENSEMBLE_SIZE + 1), size):
                result = agreement(probabilities, subset, full)
                results.setdefault(subset, {})[label] = result
                rows.append((statistics.mean(result.dice.values()), subset, result))
            rows.sort(key=lambda r: r[0])
            for tag, row in (("worst", rows[0]), ("median", rows[len(rows) // 2]), ("best", rows[-1])):
                cells = " ".join(f"{row[2].dice.get(n, float('nan')):7.3f}" for n in CLASSES.values())
                print(f"{size:8d} {tag + ' ' + ','.join(map(str, row[1])):>16s} {cells}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-head", action="store_true", help="agreement on the fixture CT only")
    args = parser.parse_args(argv)
    members = {n: load_member(n) for n in range(1, ENSEMBLE_SIZE + 1)}
    reference_s = matmul_seconds()
    print(f"reference: 2048^3 float32 matmul (17.2 GFLOP) {reference_s * 1000:.0f} ms "
          f"({2 * 2048 ** 3 / reference_s / 1e9:.0f} GFLOP/s); 'x mm' = multiples of it")
    series = bench_series(members, BlastCtParameters(device="cpu"))
    worst_prep = max(prep for _, prep, _ in series)
    worst_model = max(model for _, _, model in series)
    fits = max(1, min(ENSEMBLE_SIZE, int((BUDGET_S - worst_prep) // worst_model)))
    print(f"\nmembers that fit {BUDGET_S:.0f} s (idle 2 cores) for the slower series: {fits}")
    results = bench_agreement(members, range(1, min(fits + 1, 4) + 1), args.skip_head)

    def mean_dice(subset: tuple[int, ...]) -> float:
        return statistics.mean(d for a in results[subset].values() for d in a.dice.values())

    best = max((s for s in results if len(s) == fits), key=mean_dice)
    for name, subset in (("recommended", best), ("configured", CPU_DEFAULT_ENSEMBLE)):
        if subset not in results:
            continue
        print(f"\n{name} CPU default {subset}: mean Dice with all 12 {mean_dice(subset):.3f}")
        for label, result in results[subset].items():
            print(f"  {label}: Dice " + ", ".join(f"{n} {v:.3f}" for n, v in result.dice.items())
                  + "; mL " + ", ".join(f"{n} {v:.1f}" for n, v in result.volumes_ml.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
