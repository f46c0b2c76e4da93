"""A site's training data: a CSV manifest of baseline CTs, masks, clinical variables, labels.

Manifest columns (paths relative to the CSV's folder)::

    case_id, ct, mask, [label], [baseline_volume_ml, followup_volume_ml],
    anticoagulant_use, systolic_bp_mmhg, diastolic_bp_mmhg, pt_inr, hours_onset_to_ct

``ct`` is a NIfTI file in HU or a folder holding the DICOM images of one series.
``mask`` is a NIfTI on that CT's grid; left empty, the mask is computed by the
configured automatic method (``masking`` in config.toml), which the log and the model
card then say. ``label`` is 1 for hematoma expansion, 0 otherwise. Without it, the
label derives from the baseline and follow-up volumes: growth > 6 mL or > 33 % of
baseline. The masks are of the intraparenchymal hematoma only (intraventricular blood
excluded, study A).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from domain.clinical import BINARY_PREDICTOR_VARIABLES, PREDICTOR_VARIABLES, ClinicalVariables
from domain.errors import InvalidInputError
from domain.followup import expansion_by_volume
from inference.masking.base import HematomaMasker
from inference.masking.registry import create_masker
from inference.model_card import Standardisation
from inference.parameters import MaskingChoice
from inference.tanioka_preprocessing import ALGORITHM_VERSION as PREPROCESSING_VERSION
from inference.tanioka_preprocessing import TaniokaGeometry, hematoma_image
from inference.training.case_images import load_ct, mask_on_ct_grid

log = logging.getLogger("hemex.training")

_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}


@dataclass(frozen=True)
class Case:
    """One patient of the manifest."""

    case_id: str
    ct_path: Path
    mask_path: Path | None  # None: computed by the configured automatic method
    label: int
    clinical: ClinicalVariables


def expansion_label(baseline_ml: float, followup_ml: float) -> int:
    """1 when follow-up minus baseline > 6 mL or > 33 % of baseline, else 0 (the one rule,
    ``domain.followup.expansion_by_volume``, that the node's follow-up pairing uses too)."""
    return int(expansion_by_volume(baseline_ml, followup_ml))


def _bool(value: str, where: str) -> bool | None:
    v = value.strip().lower()
    if not v:
        return None
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InvalidInputError(f"{where}: expected yes/no or 1/0, got {value!r}")


def _float(value: str, where: str) -> float | None:
    if not value.strip():
        return None
    try:
        out = float(value)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: not a number: {value!r}") from exc
    if not math.isfinite(out):
        raise InvalidInputError(f"{where}: not finite: {value!r}")
    return out


def _label(row: dict[str, str], where: str) -> int:
    if (row.get("label") or "").strip():
        flag = _bool(row["label"], f"{where} label")
        return int(bool(flag))
    base = _float(row.get("baseline_volume_ml") or "", f"{where} baseline_volume_ml")
    follow = _float(row.get("followup_volume_ml") or "", f"{where} followup_volume_ml")
    if base is None or follow is None:
        raise InvalidInputError(f"{where}: needs a label or both baseline and follow-up volumes")
    return expansion_label(base, follow)


def load_manifest(csv_path: Path) -> list[Case]:
    """Read and check the manifest; InvalidInputError names the first bad row."""
    csv_path = Path(csv_path)
    root = csv_path.parent
    cases: list[Case] = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{csv_path.name} line {n}"
            for column in ("case_id", "ct"):
                if not (row.get(column) or "").strip():
                    raise InvalidInputError(f"{where}: '{column}' is empty")
            mask = (row.get("mask") or "").strip()
            # Checked here so a typo stops the run at once, naming its line, not hours in.
            for column, value in (("ct", row["ct"].strip()), ("mask", mask)):
                if value and not (root / value).exists():
                    raise InvalidInputError(f"{where}: {column} not found: {value}")
            values: dict[str, object] = {}
            for name in PREDICTOR_VARIABLES:
                raw = row.get(name) or ""
                values[name] = (_bool(raw, f"{where} {name}") if name in BINARY_PREDICTOR_VARIABLES
                                else _float(raw, f"{where} {name}"))
            cases.append(Case(case_id=row["case_id"].strip(), ct_path=root / row["ct"].strip(),
                              mask_path=root / mask if mask else None, label=_label(row, where),
                              clinical=ClinicalVariables(**values)))  # type: ignore[arg-type]
    if not cases:
        raise InvalidInputError(f"{csv_path.name}: no cases")
    return cases


@dataclass(frozen=True)
class PreparedImages:
    """The cached model inputs of a manifest's cases, and where their masks came from."""

    paths: list[Path]
    automatic_masks: int = 0
    masking_method: str | None = None  # "<name> <version>" when any mask was computed
    manifest_masks: int = 0

    def masks_statement(self) -> str:
        """How the masks were made, for the model card and the evaluation printout."""
        if not self.automatic_masks:
            return f"masks: all {self.manifest_masks} from the manifest"
        return (f"masks: {self.manifest_masks} from the manifest, {self.automatic_masks} computed "
                f"automatically by {self.masking_method} (not drawn by experts, unlike the "
                "published model's)")


def _files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def cache_key(case: Case, geometry: TaniokaGeometry, masking: str = "") -> str:
    """What a cached image depends on, hashed: the preprocessing version and geometry,
    each source file's path, size and modification time, and the automatic masking
    method (name, version, settings) when the case has no mask file.

    Keyed by case_id alone, a second manifest reusing an id, an edited mask or a newer
    preprocessing in the same output folder was silently served the old image.
    """
    digest = hashlib.sha256(f"{PREPROCESSING_VERSION}|{geometry!r}".encode())
    for source in (case.ct_path, case.mask_path):
        if source is None:
            digest.update(f"|automatic mask: {masking}".encode())
            continue
        for f in _files_of(source):
            stat = f.stat()
            digest.update(f"|{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def prepare_images(cases: list[Case], geometry: TaniokaGeometry, cache_dir: Path,
                   masking: MaskingChoice | None = None) -> PreparedImages:
    """Preprocess each case once into ``cache_dir`` as (H, W, slices, 1) float32 .npy.

    Cases without a mask file get one from the automatic method ``masking`` names
    (default settings when None), created once and only if needed.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    masking = masking or MaskingChoice()
    masker: HematomaMasker | None = None
    if any(c.mask_path is None for c in cases):
        masker = create_masker(masking.method, masking.parameters)
    method = f"{masker.name} {masker.version}" if masker else None
    paths = []
    for n, case in enumerate(tqdm(cases, desc="preprocessing", unit="case")):
        # The file name carries no case_id: sites may use identifiers that are PHI.
        out = cache_dir / f"case{n:05d}-{cache_key(case, geometry, f'{method} {masking!r}')}.npy"
        if not out.exists():
            volume = load_ct(case.ct_path)
            if case.mask_path is not None:
                mask = mask_on_ct_grid(case.mask_path, volume)
            else:
                assert masker is not None
                mask = masker.segment(volume)
                log.info("event=automatic_mask case_index=%d method=%s voxels=%d", n, method,
                         int(mask.mask.sum()))
            image = hematoma_image(volume, mask, geometry)
            tmp = out.with_name(".tmp-" + out.name)
            np.save(tmp, image)
            tmp.replace(out)
        paths.append(out)
    automatic = sum(c.mask_path is None for c in cases)
    if automatic:
        log.warning("event=automatic_masks count=%d of=%d method=%s note=masks not drawn by experts",
                    automatic, len(cases), method)
    return PreparedImages(paths=paths, automatic_masks=automatic, masking_method=method,
                          manifest_masks=len(cases) - automatic)


def fit_standardisation(cases: list[Case]) -> dict[str, Standardisation]:
    """Mean and SD (ddof 0, as scikit-learn's StandardScaler) of each continuous variable."""
    scalers = {}
    for name in PREDICTOR_VARIABLES:
        if name in BINARY_PREDICTOR_VARIABLES:
            continue
        values = np.array([getattr(c.clinical, name) for c in cases
                           if getattr(c.clinical, name) is not None], dtype=np.float64)
        if values.size == 0:
            raise InvalidInputError(f"no values of {name} in the training cases")
        sd = float(values.std())
        scalers[name] = Standardisation(mean=float(values.mean()), sd=sd if sd > 0 else 1.0)
    return scalers


def clinical_matrix(cases: list[Case], scalers: dict[str, Standardisation]) -> np.ndarray:
    """(n, 5) float32 in the model's order; InvalidInputError if a value is missing."""
    rows = []
    for case in cases:
        missing = case.clinical.missing(PREDICTOR_VARIABLES)
        if missing:
            raise InvalidInputError(f"case {case.case_id}: missing {', '.join(missing)} "
                                    "(the multimodal model needs all five)")
        rows.append([1.0 if case.clinical.anticoagulant_use else 0.0]
                    + [scalers[n].apply(float(getattr(case.clinical, n)))
                       for n in PREDICTOR_VARIABLES[1:]])
    return np.asarray(rows, dtype=np.float32)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split keeping the expansion rate in both parts; (train_idx, val_idx)."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_val = round(len(idx) * val_fraction)
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.extend(int(i) for i in idx[:n_val])
        train.extend(int(i) for i in idx[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))
