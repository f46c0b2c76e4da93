"""``hemex export-training-set DIR``: the node's labelled baselines as a training set in
the layout ``hemex train`` and ``hemex evaluate`` read (``inference.training.dataset``).

One case per baseline whose first follow-up gave a label (the volume rule). Each case is
``cases/<case_id>/ct.nii.gz`` (the baseline series in HU, from the node's spool) and
``mask.nii.gz`` (the mask its report was made from, on the same grid), a row of
``manifest.csv`` (the five predictor variables as the node matched them, the observed
label, both volumes) and ``cases/<case_id>/provenance.json`` (methods and versions,
hours to the follow-up, the revised label, the prediction made at baseline, the node's
version). Case and patient identifiers are stable pseudonyms (a keyed hash with the node
key: the same patient gets the same pseudonym in every export of this node), unless
``keep_identifiers``. NIfTI files carry no DICOM header, so no name or birth date
leaves with them.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pydicom

from daemon.config import Settings
from daemon.node_key import derived_key, node_key
from daemon.ops.node_status import open_database
from daemon.state.mask_files import load_mask
from domain.analysis import AnalysisRecord
from domain.clinical import BINARY_PREDICTOR_VARIABLES, PREDICTOR_VARIABLES
from domain.durable_files import ensure_private_dir, write_atomically
from domain.errors import HemexError
from domain.outcomes import ObservedOutcome
from domain.study import StudyIdentity
from domain.version import __version__
from inference.nifti_io import gzipped, mask_to_nifti, volume_to_nifti
from inference.series_to_volume import volume_from_datasets

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("case_id", "patient", "ct", "mask", "label", "baseline_volume_ml", "followup_volume_ml",
                    *PREDICTOR_VARIABLES, "revised_label", "hours_to_followup", "masking_method")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote and what it left out (reason -> count)."""

    manifest: Path
    cases: int
    left_out: dict[str, int]


def _pseudonym(key: bytes, kind: str, value: str) -> str:
    return kind + "-" + hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:12]


def _value(name: str, value: object) -> str:
    if value is None:
        return ""
    if name in BINARY_PREDICTOR_VARIABLES:
        return "yes" if value else "no"
    return f"{float(value):g}"  # type: ignore[arg-type]


def export_training_set(settings: Settings, out_dir: Path, since: datetime | None = None,
                        until: datetime | None = None, keep_identifiers: bool = False) -> ExportSummary:
    """Write the labelled baselines acquired in [since, until) to ``out_dir``."""
    db = open_database(settings)
    key = derived_key(node_key(settings), "pseudonym")
    with db.reading() as repos:
        outcomes = [o for o in repos.followups.outcomes(since, until) if o.role.value == "followup"]
        cases = [(o, repos.analyses.latest_reported(o.baseline_study_uid), repos.studies.identity(o.baseline_study_uid))
                 for o in outcomes]
        paths = {o.baseline_study_uid: repos.images.paths_of_series(r.series_uid) for o, r, _ in cases if r}
    left_out: Counter[str] = Counter()
    rows = []
    ensure_private_dir(out_dir / "cases")
    for outcome, record, identity in cases:
        if outcome.label is None:
            left_out["not assessable"] += 1
            continue
        if record is None:
            left_out["baseline analysis missing"] += 1
            continue
        case_id = identity.study_uid if keep_identifiers else _pseudonym(key, "case", identity.study_uid)
        try:
            _write_case(out_dir / "cases" / case_id, record, paths[outcome.baseline_study_uid], settings)
        except (FileNotFoundError, HemexError) as exc:
            reason = "images or mask no longer on disk" if isinstance(exc, FileNotFoundError) else str(exc)
            left_out[reason] += 1
            log.warning("training case left out study=%s reason=%s", identity.handle, reason)
            continue
        rows.append(_row(case_id, _patient(key, identity, keep_identifiers), outcome, record))
        write_atomically(out_dir / "cases" / case_id / "provenance.json",
                         json.dumps(_provenance(outcome, record, keep_identifiers), indent=2, default=str).encode())
    manifest = out_dir / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    log.info("training set exported cases=%d left_out=%d", len(rows), sum(left_out.values()))
    return ExportSummary(manifest, len(rows), dict(left_out))


def _patient(key: bytes, identity: StudyIdentity, keep: bool) -> str:
    ident = f"{identity.issuer_of_patient_id or ''}|{identity.patient_id or identity.study_uid}"
    return ident if keep else _pseudonym(key, "pt", ident)


def _write_case(folder: Path, record: AnalysisRecord, paths: list[Path], settings: Settings) -> None:
    """The baseline CT and its report's mask, as NIfTI on one grid.

    Raises
    ------
    FileNotFoundError
        The spool images or the mask were purged (retention).
    HemexError
        The images no longer make the analysed volume, or the mask lies on other images.
    """
    if not paths:
        raise FileNotFoundError("no images")
    volume = volume_from_datasets([pydicom.dcmread(p) for p in paths], settings.volume)
    geometry, mask = load_mask(record.mask_folder or record.folder)
    if geometry.sop_instance_uids != volume.sop_instance_uids:
        raise HemexError("the mask lies on other images than the stored series")
    ensure_private_dir(folder)
    write_atomically(folder / "ct.nii.gz", gzipped(volume_to_nifti(volume)))
    write_atomically(folder / "mask.nii.gz", gzipped(mask_to_nifti(geometry, mask)))


def _row(case_id: str, patient: str, outcome: ObservedOutcome, record: AnalysisRecord) -> dict[str, str]:
    change, clinical = outcome.change, record.analysis.clinical
    row = {"case_id": case_id, "patient": patient, "ct": f"cases/{case_id}/ct.nii.gz",
           "mask": f"cases/{case_id}/mask.nii.gz", "label": str(outcome.label),
           "baseline_volume_ml": f"{change.baseline_ml:.3f}", "followup_volume_ml": f"{change.followup_ml:.3f}",
           "revised_label": "" if change.revised_expansion is None else str(int(change.revised_expansion)),
           "hours_to_followup": f"{change.hours_between:.2f}",
           "masking_method": f"{outcome.method_name} {outcome.method_version}"}
    row.update({name: _value(name, getattr(clinical, name)) for name in PREDICTOR_VARIABLES})
    return row


def _provenance(outcome: ObservedOutcome, record: AnalysisRecord, keep: bool) -> dict[str, object]:
    prediction = outcome.prediction
    return {
        "exported_by": f"hemex {__version__}",
        "label_rule": "follow-up minus baseline planimetric volume > 6 mL or > 33 % of baseline",
        "masks": f"automatic, {outcome.method_name} {outcome.method_version} (not drawn by experts)",
        "baseline": {"study": outcome.baseline_study_uid if keep else None,
                     "acquired": outcome.baseline_acquired_at.isoformat(timespec="minutes") if keep else None,
                     "software_version": record.analysis.software_version},
        "followup": {"study": outcome.followup_study_uid if keep else None,
                     "method": f"{outcome.followup_method_name} {outcome.followup_method_version}"},
        "change": asdict(outcome.change),
        "clinical_sources": {name: asdict(p) for name, p in record.analysis.clinical_sources.items()
                             if name in PREDICTOR_VARIABLES},
        "prediction_at_baseline": None if prediction is None else {
            "probability": prediction.probability, "model": f"{prediction.model_name} {prediction.model_version}",
            "clinically_validated": prediction.clinically_validated},
        "brain_points": outcome.brain_points,
    }
