"""Train Multimodal CNN Model 2 (or CNN Model 2) with the published recipe.

Adam (lr 1e-3), batch 2, 70 epochs, binary cross-entropy; 70 % of each class trains,
30 % validates (a seeded stratified split; the authors' was unseeded); expansion cases
of the training split only are augmented as the authors did (``augment.py``: each also
rotated 30 degrees, flipped, and both). After every epoch the model is checkpointed and
scored on the validation cases; the best epoch is chosen by validation sensitivity,
then ROC AUC (from probabilities), and saved as ``best.keras`` with a model card that
says it is NOT clinically validated.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from domain.clinical import PREDICTOR_VARIABLES
from domain.errors import InvalidInputError
from domain.version import __version__
from inference.model_card import ModelCard, Standardisation, graph_of
from inference.parameters import MaskingChoice
from inference.tanioka_models import ModelSpec, build_model
from inference.tanioka_preprocessing import geometry_for_shape
from inference.training.augment import (
    PUBLISHED_ROTATION_DEG,
    Variant,
    epoch_variants,
    flipped_image,
    rotated_image,
)
from inference.training.dataset import (
    clinical_matrix,
    fit_standardisation,
    load_manifest,
    prepare_images,
    stratified_split,
)
from inference.training.metrics import binary_metrics
from inference.weights import save_model_with_card

log = logging.getLogger("hemex.training")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; defaults are the published recipe."""

    manifest: Path
    out_dir: Path
    spec: ModelSpec = field(default_factory=ModelSpec)
    epochs: int = 70
    batch_size: int = 2
    learning_rate: float = 1e-3
    val_fraction: float = 0.3
    seed: int = 0
    augment: bool = True
    keep_every_epoch: bool = False
    threshold: float = 0.5
    verbose: int = 1
    # The automatic method for cases whose manifest row has no mask.
    masking: MaskingChoice = field(default_factory=MaskingChoice)


@dataclass(frozen=True)
class TrainResult:
    """Where the best and last models are, and how the best one scored."""

    best_path: Path
    last_path: Path
    history_path: Path
    best_epoch: int
    best_sensitivity: float | None
    best_auc: float | None


class CaseSequence(keras.utils.PyDataset):
    """Batches of cached hematoma images (+ clinical vectors), shuffled each epoch; with
    ``augment``, the authors' augmented copies of the expansion cases among them."""

    def __init__(self, paths: list[Path], clinical: np.ndarray | None, labels: np.ndarray,
                 batch_size: int, seed: int, augment: bool) -> None:
        super().__init__()
        self._paths, self._clinical, self._labels = paths, clinical, labels
        self._batch_size = batch_size
        self._variants = (epoch_variants(labels) if augment
                          else [Variant(i) for i in range(len(labels))])
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self._variants))

    def __len__(self) -> int:
        return int(np.ceil(len(self._order) / self._batch_size))

    def _image(self, variant: Variant) -> np.ndarray:
        if variant.rotated:
            # The cubic rotation of a 256 x 256 x 80 image takes seconds: made once per case.
            path = self._paths[variant.index]
            rotated = path.with_name(path.stem + f"-rotated{PUBLISHED_ROTATION_DEG:g}.npy")
            if not rotated.exists():
                tmp = rotated.with_name(".tmp-" + rotated.name)
                np.save(tmp, rotated_image(np.load(path)))
                tmp.replace(rotated)
            image = np.load(rotated)
        else:
            image = np.load(self._paths[variant.index])
        return flipped_image(image) if variant.flipped else image

    def __getitem__(self, i: int) -> tuple[object, np.ndarray]:
        batch = [self._variants[j] for j in self._order[i * self._batch_size:(i + 1) * self._batch_size]]
        images = np.stack([self._image(v) for v in batch])
        idx = np.array([v.index for v in batch])
        y = self._labels[idx].astype(np.float32)[:, None]
        if self._clinical is None:
            return images, y
        return (images, self._clinical[idx]), y

    def on_epoch_end(self) -> None:
        self._order = self._rng.permutation(len(self._variants))


def _predict(model: keras.Model, images: np.ndarray, clinical: np.ndarray | None,
             batch_size: int) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        inputs = x if clinical is None else [x, clinical[start:start + batch_size]]
        out.append(np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(inputs))).reshape(-1))
    return np.concatenate(out)


class _SelectAndCheckpoint(keras.callbacks.Callback):
    """Checkpoint each epoch; keep the best by (validation sensitivity, then AUC)."""

    def __init__(self, config: TrainConfig, card_for: object, val_images: np.ndarray,
                 val_clinical: np.ndarray | None, val_labels: np.ndarray) -> None:
        super().__init__()
        self.config, self.card_for = config, card_for
        self.val_images, self.val_clinical, self.val_labels = val_images, val_clinical, val_labels
        self.best_key: tuple[float, float] = (-1.0, -1.0)
        self.best_epoch = 0
        self.best_sens: float | None = None
        self.best_auc: float | None = None
        ckpt = config.out_dir / "checkpoints"
        ckpt.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = ckpt
        self.history_path = config.out_dir / "history.csv"
        with self.history_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(["epoch", "loss", "val_sensitivity", "val_specificity", "val_auc"])

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        n = epoch + 1
        probs = _predict(self.model, self.val_images, self.val_clinical, self.config.batch_size)
        m = binary_metrics(self.val_labels, probs, self.config.threshold, n_boot=0)
        sens, auc = m.sensitivity.value, m.auc.value
        card = self.card_for(n, m)  # type: ignore[operator]
        save_model_with_card(self.model, card, self.ckpt_dir / "last.keras")
        if self.config.keep_every_epoch:
            save_model_with_card(self.model, card, self.ckpt_dir / f"epoch_{n:03d}.keras")
        key = (sens if sens is not None else -1.0, auc if auc is not None else -1.0)
        if key > self.best_key:
            self.best_key, self.best_epoch, self.best_sens, self.best_auc = key, n, sens, auc
            save_model_with_card(self.model, card, self.config.out_dir / "best.keras")
        loss = (logs or {}).get("loss", float("nan"))
        with self.history_path.open("a", newline="") as fh:
            csv.writer(fh).writerow([n, f"{loss:.6f}", sens, m.specificity.value, auc])
        log.info("event=epoch_done epoch=%d loss=%.4f val_sensitivity=%s val_auc=%s best_epoch=%d",
                 n, loss, sens, auc, self.best_epoch)


def _card_factory(config: TrainConfig, scalers: dict[str, Standardisation], n_train: int,
                  n_val: int, n_pos: int, masks: str) -> object:
    spec = config.spec
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = "Multimodal CNN Model 2" if spec.multimodal else "CNN Model 2"

    def card_for(epoch: int, m: object) -> ModelCard:
        return ModelCard(
            model_name=f"{name} (Tanioka et al. 2024 architecture)",
            model_version=f"site-{stamp}-epoch{epoch}",
            architecture=spec.architecture,
            origin=f"trained by hemex {__version__} `hemex train` on {config.manifest.name} at {stamp}",
            training_data=(f"{n_train} training and {n_val} validation cases ({n_pos} expansions) "
                           f"from {config.manifest}; stratified split, seed {config.seed}; {masks}"),
            intended_use=("research and local validation only; NOT for clinical use until "
                          "validated on an external test set by the responsible clinicians"),
            validation={"internal_validation_n": n_val, "epoch": epoch,
                        "internal_validation_sensitivity": m.sensitivity.value,  # type: ignore[attr-defined]
                        "internal_validation_specificity": m.specificity.value,  # type: ignore[attr-defined]
                        "internal_validation_auc": m.auc.value},  # type: ignore[attr-defined]
            clinically_validated=False,
            input_shape=spec.input_shape,
            clinical_variables=PREDICTOR_VARIABLES if spec.multimodal else (),
            standardisation=scalers if spec.multimodal else {},
            graph=graph_of(spec),
        )
    return card_for


def train(config: TrainConfig) -> TrainResult:
    """Run one training; returns the best model's path and scores."""
    keras.utils.set_random_seed(config.seed)
    cases = load_manifest(config.manifest)
    labels = np.array([c.label for c in cases], dtype=int)
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise InvalidInputError("training needs both expansion and non-expansion cases")
    train_idx, val_idx = stratified_split(labels, config.val_fraction, config.seed)
    if len(val_idx) == 0:
        raise InvalidInputError("no validation cases; add cases or raise val_fraction")
    geometry = geometry_for_shape(config.spec.input_shape)
    prepared = prepare_images(cases, geometry, config.out_dir / "cache", config.masking)
    paths = prepared.paths
    train_cases = [cases[i] for i in train_idx]
    scalers = fit_standardisation(train_cases) if config.spec.multimodal else {}
    clinical = clinical_matrix(cases, scalers) if config.spec.multimodal else None

    model = build_model(config.spec)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.BinaryCrossentropy())
    seq = CaseSequence([paths[i] for i in train_idx],
                       clinical[train_idx] if clinical is not None else None, labels[train_idx],
                       config.batch_size, config.seed, config.augment)
    val_images = np.stack([np.load(paths[i]) for i in val_idx])
    selector = _SelectAndCheckpoint(
        config, _card_factory(config, scalers, len(train_idx), len(val_idx), int(labels.sum()),
                              prepared.masks_statement()),
        val_images, clinical[val_idx] if clinical is not None else None, labels[val_idx])
    model.fit(seq, epochs=config.epochs, callbacks=[selector], verbose=config.verbose)
    return TrainResult(best_path=config.out_dir / "best.keras",
                       last_path=selector.ckpt_dir / "last.keras",
                       history_path=selector.history_path, best_epoch=selector.best_epoch,
                       best_sensitivity=selector.best_sens, best_auc=selector.best_auc)
