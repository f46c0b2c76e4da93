"""Convert BLAST-CT's PyTorch state dicts into Keras weight files with model cards.

Reads each ``saved_models/model_N.pt`` with the restricted reader (no torch, no code
from the file runs), maps every tensor onto the Keras network by name, and writes
``model_N.weights.h5`` (float32, Keras 3 format) and ``model_N.weights.h5.card.json``
into the package's ``weights/`` folder, beside the Apache-2.0 LICENSE and NOTICE.

Usage (from the repository root)::

    .venv/bin/python -m inference.masking.blast_ct.convert_weights \
        [--source ../shared/data/blast_ct_v1] [--out inference/masking/blast_ct/weights]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from inference.masking.blast_ct.model_card import BlastCtModelCard, card_path
from inference.masking.blast_ct.network import (
    CLASS_NAMES,
    FEATURE_MAPS,
    SCALE_FACTORS,
    build_deepmedic,
)
from inference.masking.blast_ct.torch_state_dict import read_state_dict
from inference.masking.blast_ct.weight_files import CANONICAL_INPUT, ENSEMBLE_SIZE, WEIGHTS_DIR

DEFAULT_SOURCE = Path(__file__).resolve().parents[4] / "shared" / "data" / "blast_ct_v1"
MODEL_VERSION = "v1"
CONVERSION_VERSION = "1.0"


def keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its weights, from a blast-ct DeepMedic state dict.

    torch Conv3d (out, in, d, h, w) -> Keras Conv3D (d, h, w, in, out); BatchNorm3d
    weight/bias/running stats -> gamma, beta, moving mean, moving variance; the single
    PReLU slope -> the Keras PReLU alpha with every axis shared.
    """
    blocks: dict[str, str] = {}
    for path_index, scale in enumerate(SCALE_FACTORS):
        torch_path = f"path({scale}, {scale}, {scale}){path_index}.path"
        for block in range(1, len(FEATURE_MAPS) + 1):  # module 0 of each path is the subsampling
            blocks[f"path{scale}_block{block}"] = f"{torch_path}.{block}"
    for index in range(3):
        blocks[f"fc{index}"] = f"fully_connected.{index}"
    expected = {f"{prefix}.{part}" for prefix in blocks.values()
                for part in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                             "bn.num_batches_tracked", "conv.weight", "prelu.weight")}
    if set(state) != expected:
        raise ValueError(f"not a BLAST-CT DeepMedic state dict: unexpected {sorted(set(state) - expected)[:3]}, "
                         f"missing {sorted(expected - set(state))[:3]}")
    weights: dict[str, list[np.ndarray]] = {}
    for name, prefix in blocks.items():
        weights[f"{name}_bn"] = [state[f"{prefix}.bn.{part}"].astype(np.float32)
                                 for part in ("weight", "bias", "running_mean", "running_var")]
        weights[f"{name}_prelu"] = [state[f"{prefix}.prelu.weight"].astype(np.float32).reshape(1, 1, 1, 1)]
        weights[f"{name}_conv"] = [np.ascontiguousarray(
            state[f"{prefix}.conv.weight"].astype(np.float32).transpose(2, 3, 4, 1, 0))]
    return weights


def set_state_dict(model: object, state: dict[str, np.ndarray]) -> None:
    """Load a blast-ct state dict into a network from ``build_deepmedic``."""
    for name, arrays in keras_weights(state).items():
        model.get_layer(name).set_weights(arrays)  # type: ignore[attr-defined]


def card_for(member: int, source_file: Path, sha256: str) -> BlastCtModelCard:
    return BlastCtModelCard(
        model_name="BLAST-CT", model_version=MODEL_VERSION, ensemble_member=member,
        source="biomedia-mira/blast-ct (github.com/biomedia-mira/blast-ct), 2020 release of v1 weights",
        source_file=f"saved_models/{source_file.name}", source_sha256=sha256,
        citation=("Monteiro M, Newcombe VFJ, Mathieu F, et al. Multiclass semantic segmentation and "
                  "quantification of traumatic brain injury lesions on head CT using deep learning. "
                  "Lancet Digit Health 2020;2:e314-22"),
        licence="Apache-2.0",
        training_data="184 head CT scans, mostly traumatic brain injury (TBI)",
        intended_use=("research: voxel labels of intraparenchymal hemorrhage, extra-axial hemorrhage, "
                      "perilesional oedema and intraventricular hemorrhage on non-contrast head CT"),
        validation=("trained and validated by its authors on TBI CT only; not validated on spontaneous "
                    "intracerebral hemorrhage, and not validated by this project"),
        clinically_validated=False,
        classes=CLASS_NAMES, input_spacing_mm=(1.0, 1.0, 1.0), intensity_window_hu=(-15.0, 100.0),
        trainable_parameters=1_030_033,
        conversion=(f"hemex convert_weights {CONVERSION_VERSION}: state dict read without torch, "
                    "float32, Conv3d weights transposed to channels-last"),
    )


def convert(source: Path, out: Path) -> list[Path]:
    """Write every ``model_N.pt`` of ``source`` as a Keras weight file and card into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model = build_deepmedic(CANONICAL_INPUT)
    written = []
    files = sorted((source / "saved_models").glob("model_*.pt"),
                   key=lambda p: int(re.sub(r"\D", "", p.stem)))
    if len(files) != ENSEMBLE_SIZE:
        raise ValueError(f"expected {ENSEMBLE_SIZE} state dicts in {source / 'saved_models'}, found {len(files)}")
    for source_file in files:
        member = int(re.sub(r"\D", "", source_file.stem))
        set_state_dict(model, read_state_dict(source_file))
        target = out / f"model_{member}.weights.h5"
        model.save_weights(target)
        sha256 = hashlib.sha256(source_file.read_bytes()).hexdigest()
        card_path(target).write_text(card_for(member, source_file, sha256).to_json(), encoding="utf-8")
        written.append(target)
    shutil.copyfile(source / "LICENSE.txt", out / "LICENSE")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    for path in convert(args.source, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
