"""Stage 4: analyse one study, from spooled images to a queued report and alert.

select series -> build volume -> mask -> measure -> match clinical data -> predict ->
build SEG + SR -> validate -> write results -> queue deliveries -> queue alert.
Each step is timed; the timings are logged and kept in the result's summary.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from daemon.assemble.series_selection import SeriesCandidate, select_series
from daemon.config import Settings
from daemon.state.database import Database
from domain.analysis import Completion, StudyAnalysis, StudyIdentity
from domain.clinical import PREDICTOR_VARIABLES, ClinicalVariables
from domain.errors import NoAnalysableSeriesError
from domain.handles import study_handle
from domain.imaging import CTVolume, HematomaMask
from domain.prediction import prediction_unavailable_reason, risk_category
from domain.version import __version__
from inference.masking.base import HematomaMasker
from inference.measurements import measure_hematoma
from inference.prediction import ExpansionPredictor
from inference.scores.brain_score import compute_brain_score
from inference.series_to_volume import volume_from_datasets

log = logging.getLogger(__name__)

ClinicalLookup = Callable[[StudyIdentity, datetime | None], ClinicalVariables]
MaskLoader = Callable[[CTVolume], HematomaMask]


@dataclass(frozen=True)
class AnalysedStudy:
    """What the report stage needs besides the typed analysis itself."""

    analysis: StudyAnalysis
    volume: CTVolume
    mask: HematomaMask
    source_images: list[Dataset]
    skipped_series: tuple[tuple[str, str], ...]
    stage_seconds: dict[str, float]


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 4)


def study_identity(db: Database, study_uid: str) -> StudyIdentity:
    row = db.query("SELECT * FROM studies WHERE study_uid = ?", (study_uid,))[0]
    return StudyIdentity(
        study_uid=study_uid,
        handle=row["handle"],
        patient_id=row["patient_id"],
        issuer_of_patient_id=row["issuer_of_patient_id"],
        accession_number=row["accession_number"],
        patient_name=None,
        study_datetime=row["study_datetime"],
    )


def series_candidates(db: Database, study_uid: str) -> list[SeriesCandidate]:
    """One header (no pixels) per complete series of the study."""
    candidates = []
    for row in db.query(
        "SELECT s.series_uid, s.instance_count, MIN(i.path) AS path FROM series s"
        " JOIN instances i ON i.series_uid = s.series_uid"
        " WHERE s.study_uid = ? AND s.state = 'complete' GROUP BY s.series_uid",
        (study_uid,),
    ):
        header = pydicom.dcmread(row["path"], stop_before_pixels=True)
        candidates.append(SeriesCandidate(row["series_uid"], row["instance_count"], header))
    return candidates


def load_series(db: Database, series_uid: str) -> list[Dataset]:
    paths = [r["path"] for r in db.query("SELECT path FROM instances WHERE series_uid = ?", (series_uid,))]
    return [pydicom.dcmread(p) for p in paths]


def acquisition_time(ds: Dataset) -> datetime | None:
    """CT acquisition time from AcquisitionDateTime, else Acquisition/Series/Study date+time."""
    candidates = [str(ds.get("AcquisitionDateTime", "") or "")]
    for date_kw, time_kw in (("AcquisitionDate", "AcquisitionTime"), ("SeriesDate", "SeriesTime"),
                             ("StudyDate", "StudyTime")):
        candidates.append(str(ds.get(date_kw, "") or "") + str(ds.get(time_kw, "") or ""))
    for text in candidates:
        text = text.split("+")[0].split("-")[0]
        for fmt, length in (("%Y%m%d%H%M%S.%f", None), ("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12)):
            try:
                return datetime.strptime(text if length is None else text[:length], fmt)
            except ValueError:
                continue
    return None


class StudyAnalyser:
    """Holds the loaded masker and predictor (kept warm) and analyses studies."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        masker: HematomaMasker,
        predictor: ExpansionPredictor | None,
        clinical_lookup: ClinicalLookup | None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._masker = masker
        self._predictor = predictor
        self._clinical_lookup = clinical_lookup

    def analyse(self, study_uid: str, completion_requested: Completion | None = None,
                reuse_mask: MaskLoader | None = None) -> AnalysedStudy:
        """Run the image and clinical analysis of a study.

        ``completion_requested`` forces COMPLETE for a final report; otherwise the
        result is PARTIAL when the predictor's variables are missing and the node is
        configured to wait for them. ``reuse_mask`` loads an earlier report's mask onto
        the new volume instead of masking again (the final report reuses the SEG of the
        preliminary one, so its volume must come from that same mask).

        Raises
        ------
        NoAnalysableSeriesError
            When no series meets the selection rules (reasons in the message).
        UnsupportedSeriesError
            When the chosen series has inconsistent geometry.
        """
        timer = StageTimer()
        identity = study_identity(self._db, study_uid)
        handle = identity.handle
        with timer.stage("select"):
            selection = select_series(series_candidates(self._db, study_uid), self._settings.selection)
        for series_uid, reason in selection.skipped:
            log.info("series skipped study=%s series=%s reason=%s", handle, study_handle(series_uid), reason)
        if selection.chosen is None:
            raise NoAnalysableSeriesError(
                "no series meets the selection rules: " + "; ".join(r for _, r in selection.skipped)
            )
        with timer.stage("load"):
            datasets = load_series(self._db, selection.chosen.series_uid)
        with timer.stage("volume"):
            volume = volume_from_datasets(datasets, self._settings.volume)
        for ds in datasets:  # the SEG and SR need headers only: free the encoded pixels
            del ds.PixelData
        with timer.stage("mask"):
            mask = reuse_mask(volume) if reuse_mask is not None else self._masker.segment(volume)
        with timer.stage("measure"):
            measurements = measure_hematoma(volume, mask)
        ct_time = acquisition_time(datasets[0])
        with timer.stage("clinical"):
            clinical = (
                self._clinical_lookup(identity, ct_time) if self._clinical_lookup else ClinicalVariables()
            )
        prediction = None
        if self._predictor is not None:
            with timer.stage("predict"):
                prediction = self._predictor.predict(volume, mask, clinical)
        brain = compute_brain_score(
            volume_ml=measurements.volume_ml,
            recurrent_ich=clinical.recurrent_ich,
            anticoagulation=clinical.anticoagulant_use,
            intraventricular_extension=measurements.intraventricular_extension,
            hours_onset_to_ct=clinical.hours_onset_to_ct,
        )
        missing = clinical.missing(PREDICTOR_VARIABLES)
        completion: Completion
        if completion_requested is not None:
            completion = completion_requested
        elif missing and self._settings.hl7.enabled and self._settings.hl7.wait_for_clinical_s > 0:
            completion = "PARTIAL"
        else:
            completion = "COMPLETE"
        analysis = StudyAnalysis(
            identity=identity,
            series_uid=selection.chosen.series_uid,
            measurements=measurements,
            clinical=clinical,
            prediction=prediction,
            brain_score=brain,
            completion=completion,
            risk_category=risk_category(prediction, self._settings.prediction.risk_threshold),
            software_version=__version__,
            prediction_unavailable=None if prediction is not None else prediction_unavailable_reason(
                self._predictor is not None, missing),
        )
        log.info(
            "study analysed study=%s completion=%s volume_ml=%.1f risk=%s missing=%s stages=%s",
            handle, completion, measurements.volume_ml, analysis.risk_category,
            ",".join(missing) or "-", json.dumps(timer.seconds),
        )
        return AnalysedStudy(analysis, volume, mask, datasets, selection.skipped, timer.seconds)


def summary_of(analysed: AnalysedStudy) -> dict:
    """The JSON-able summary kept with each result (no pixel data)."""
    a = analysed.analysis
    return {
        "study_handle": a.identity.handle,
        "completion": a.completion,
        "risk_category": a.risk_category,
        "measurements": asdict(a.measurements),
        "prediction": asdict(a.prediction) if a.prediction else None,
        "brain_score": asdict(a.brain_score) if a.brain_score else None,  # type: ignore[call-overload]
        "clinical_present": {k: (v.isoformat() if isinstance(v, datetime) else v)
                             for k, v in a.clinical.present().items()},
        "clinical_missing": list(a.clinical.missing(PREDICTOR_VARIABLES)),
        "skipped_series": [reason for _, reason in analysed.skipped_series],
        "stage_seconds": analysed.stage_seconds,
        "mask_voxels": int(np.count_nonzero(analysed.mask.mask)),
        "software_version": a.software_version,
    }


def results_folder(results_dir: Path, handle: str, completion: Completion) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return results_dir / handle / f"{stamp}-{'final' if completion == 'COMPLETE' else 'preliminary'}"
