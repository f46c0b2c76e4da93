"""`hemex train` and `hemex evaluate`: argument parsing, and the node's ``[masking]`` for
cases without a mask; the work is in inference/training (imported only when a command runs,
so that `hemex --help` does not load Keras)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from domain.errors import HemexError
from inference.parameters import MaskingChoice


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _kernels(text: str) -> tuple[tuple[int, int, int], ...]:
    out = []
    for k in text.split(","):
        parts = tuple(int(v) for v in k.lower().split("x"))
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"kernel {k!r} is not AxBxC")
        out.append(parts)
    return tuple(out)  # type: ignore[return-value]


def _masking(args: argparse.Namespace) -> MaskingChoice:
    """The node's masking method (from --config), used where a case has no mask."""
    if args.config is None:
        return MaskingChoice()
    from daemon.config import load_settings

    return load_settings(args.config).masking.choice()


Command = Callable[[argparse.Namespace], int]


def _reported(run: Command) -> Command:
    """Bad data (a manifest row, a mask off the CT's grid) ends with its message, not a trace."""
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except HemexError as exc:
            print(f"hemex {args.command}: {exc}", file=sys.stderr)
            return 2
    return wrapped


def _run_train(args: argparse.Namespace) -> int:
    from inference.tanioka_models import ModelSpec
    from inference.training.train import TrainConfig, train

    overrides: dict[str, object] = {}
    if args.input_shape:
        overrides["input_shape"] = (*args.input_shape, 1)
    if args.filters:
        overrides["filters"] = args.filters
    if args.kernels:
        overrides["kernels"] = args.kernels
    if args.padding:
        overrides["padding"] = args.padding
    spec = ModelSpec(architecture="cnn_model2" if args.image_only else "multimodal_cnn_model2",
                     **overrides)  # type: ignore[arg-type]
    result = train(TrainConfig(manifest=args.data, out_dir=args.out, spec=spec, epochs=args.epochs,
                               batch_size=args.batch_size, learning_rate=args.lr,
                               val_fraction=args.val_fraction, seed=args.seed,
                               augment=not args.no_augment, keep_every_epoch=args.keep_every_epoch,
                               verbose=0 if args.quiet else 1, masking=_masking(args)))
    print(f"best epoch {result.best_epoch}: validation sensitivity {result.best_sensitivity}, "
          f"AUC {result.best_auc}")
    print(f"best model: {result.best_path} (card: {result.best_path}.card.json, "
          "clinically_validated=false)")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from inference.training.evaluate import evaluate, format_metrics

    report = evaluate(args.weights, args.data, args.out, threshold=args.threshold,
                      n_boot=args.bootstrap, seed=args.seed, masking=_masking(args))
    print(format_metrics(report))
    print(f"wrote {report.roc_png}, {report.calibration_png}, {report.predictions_csv}, "
          f"{report.metrics_json}")
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `train` (published recipe: Adam 1e-3, batch 2, 70 epochs) to ``subparsers``."""
    p = subparsers.add_parser("train", help="train the expansion model on a site's own data")
    p.add_argument("--data", type=Path, required=True,
                   help="manifest CSV: NIfTI or DICOM-folder CTs, optional masks (docs/model.md)")
    p.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, best.keras, card)")
    p.add_argument("--image-only", action="store_true", help="train CNN Model 2 (no clinical variables)")
    p.add_argument("--epochs", type=int, default=70)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.3,
                   help="held out for validation (the authors held out 30 %%)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--keep-every-epoch", action="store_true", help="keep one checkpoint per epoch")
    p.add_argument("--input-shape", type=_ints, default=None, help="H,W,slices (default 256,256,80)")
    p.add_argument("--filters", type=_ints, default=None, help="default 64,64,128,256")
    p.add_argument("--kernels", type=_kernels, default=None, help="default 19x19x7,19x19x7,14x14x5,11x11x4")
    p.add_argument("--padding", choices=("valid", "same"), default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--config", type=Path, default=None,
                   help="config.toml whose [masking] masks cases without a mask (default settings)")
    p.set_defaults(func=_reported(_run_train))
    return p


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `evaluate` (sensitivity, specificity, accuracy, AUC with 95 % CIs; ROC and
    calibration PNGs) to ``subparsers``."""
    p = subparsers.add_parser("evaluate", help="evaluate weights on a labelled manifest")
    p.add_argument("--weights", type=Path, required=True, help=".keras or .h5 with its .card.json beside it")
    p.add_argument("--data", type=Path, required=True, help="manifest CSV with labels or volumes")
    p.add_argument("--out", type=Path, required=True, help="folder for plots, predictions and metrics")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the AUC CI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=Path, default=None,
                   help="config.toml whose [masking] masks cases without a mask (default settings)")
    p.set_defaults(func=_reported(_run_evaluate))
    return p
