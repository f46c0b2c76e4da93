"""Job kind report_study: build, validate and write a study's report; hand it to dispatch.

Input: the study's newest analysis without a report (``analyses`` row, mask.npz), the
headers of its series, the study's previous result (the new SR names it as predecessor;
a final report reuses the preliminary report's SEG).
Output: in the analysis' result folder, the SEG, key-image KOS, key-image Secondary
Capture and SR (read back and validated), key-image.png (the capture's picture, also
attached to the alert), mask.nii.gz, summary.json, the outbound ORU and the alert files; the
``ReportBundle`` on the analysis row and a queued ``dispatch_report`` job, committed
together. A crash before that commit leaves only files; the job runs again and builds
new ones (new SOP Instance UIDs, nothing was sent yet).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from daemon.alert_links import AlertLinks
from daemon.config import Settings
from daemon.jobs.wakeup import Wakeup
from daemon.report.alert_files import prepare_alert
from daemon.report.alert_grouping import acknowledgement_for
from daemon.report.key_image_builder import build_key_images, largest_area_slice
from daemon.report.key_image_capture import build_key_image_capture, patient_orientation
from daemon.report.key_image_picture import key_image_captions, png_bytes, render_key_image
from daemon.report.oru_builder import ORU_FILE_NAME, build_oru_r01, oru_control_id
from daemon.report.seg_builder import build_segmentation
from daemon.report.source_attributes import sanitised_source_headers, with_valid_identity
from daemon.report.sr_builder import build_measurement_report
from daemon.report.validation import encode_dataset, validate_report_objects
from daemon.report.warm_validator import WarmSrValidator
from daemon.stage_timer import StageTimer
from daemon.state.database import Database
from daemon.state.mask_files import load_mask
from daemon.state.result_repository import StoredResult
from domain.alerts import AlertAcknowledgement
from domain.analysis import AnalysisRecord
from domain.clinical import PREDICTOR_VARIABLES
from domain.durable_files import write_atomically
from domain.errors import ReportBuildError, UnsupportedSeriesError
from domain.handles import study_handle
from domain.imaging import HematomaMask, VolumeGeometry
from domain.jobs import JobKind
from domain.report import AlertFiles, ReportBundle, ReportObject
from inference.nifti_io import gzipped, mask_to_nifti
from inference.series_to_volume import slice_hu

log = logging.getLogger(__name__)

KEY_IMAGE_PNG = "key-image.png"


@dataclass(frozen=True)
class KeyImage:
    """The rendered key image and the CT slice it shows."""

    picture: np.ndarray  # RGB uint8
    source: Dataset  # the slice's image, with pixels
    frame_number: int | None  # the frame of a multi-frame image
    orientation: tuple[str, str]


class ReportStage:
    """Runs ``report_study`` jobs."""

    def __init__(self, settings: Settings, db: Database, wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time, links: AlertLinks | None = None,
                 sr_validator: WarmSrValidator | None = None) -> None:
        self._settings = settings
        self._db = db
        self._wakeup = wakeup
        self._clock = clock
        self._sr_validator = sr_validator
        self._links = links  # None: alerts carry no acknowledgement (and do not escalate)

    def report_study(self, study_uid: str) -> None:
        """Build the report of the study's newest analysis that has none yet.

        Raises
        ------
        ReportBuildError
            An object could not be built or failed validation (nothing is sent).
        """
        with self._db.reading() as repos:
            record = repos.analyses.latest_unreported(study_uid)
            previous = repos.results.latest(study_uid)
            paths = repos.images.paths_of_series(record.series_uid) if record else []
        if record is None:
            log.info("report skipped study=%s reason=no analysis without a report", study_handle(study_uid))
            return
        timer = StageTimer()
        with timer.stage("headers"):
            headers: list[Dataset] = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
            geometry, mask = load_mask(record.mask_folder or record.folder)
        # The one place where patient and study attributes are checked before any report
        # object copies them: an invalid demographic value is left out, never fatal.
        headers = sanitised_source_headers(headers, record.analysis.identity.handle)
        record = replace(record, analysis=replace(record.analysis,
                                                  identity=with_valid_identity(record.analysis.identity)))
        with timer.stage("key_image"):
            key_image = self._key_image(record, paths, headers, geometry, mask)
        bundle = self._build(record, headers, geometry, mask, previous, timer, key_image)
        with self._db.transaction() as repos:
            repos.analyses.attach_bundle(record.input_key, bundle)
            now = self._clock()
            repos.jobs.enqueue(JobKind.DISPATCH_REPORT, study_uid, now, now)
        log.info("report built study=%s completion=%s objects=%d stages=%s", record.analysis.identity.handle,
                 bundle.completion, len(bundle.objects), json.dumps(timer.seconds))
        if self._wakeup is not None:
            self._wakeup.notify()

    def _key_image(self, record: AnalysisRecord, paths: list[Path], headers: list[Dataset],
                   geometry: VolumeGeometry, mask: HematomaMask) -> KeyImage | None:
        """The picture of the largest-hematoma slice, or None (empty mask, or turned off).

        Only that slice's pixels are read, from its spool file.
        """
        index = largest_area_slice(mask)
        if index is None or not self._settings.report.send_key_image_capture:
            return None
        uid = geometry.sop_instance_uids[index]
        position = next((i for i, ds in enumerate(headers) if str(ds.SOPInstanceUID) == uid), None)
        if position is None:
            raise ReportBuildError("the key image's source CT slice is missing")
        # The Secondary Capture copies its patient and study attributes from this slice.
        (source,) = sanitised_source_headers([pydicom.dcmread(paths[position])], record.analysis.identity.handle)
        frame = geometry.source_frames[index] if geometry.source_frames else 1
        try:
            hu = slice_hu(source, frame)
        except UnsupportedSeriesError as exc:
            raise ReportBuildError(f"the key slice cannot be read: {exc}") from exc
        captions = key_image_captions(record.analysis, index + 1, geometry.shape[0])
        orientation = patient_orientation(source, frame)
        picture = render_key_image(hu, mask.mask[index], captions, orientation)
        multi_frame = int(source.get("NumberOfFrames", 1) or 1) > 1
        return KeyImage(picture, source, frame if multi_frame else None, orientation)

    def _build(self, record: AnalysisRecord, headers: list[Dataset], geometry: VolumeGeometry,
               mask: HematomaMask, previous: StoredResult | None, timer: StageTimer,
               key_image: KeyImage | None) -> ReportBundle:
        analysis, settings, folder = record.analysis, self._settings, record.folder
        reused_seg = None
        if record.reuses_earlier_mask and previous is not None and previous.seg_path is not None:
            reused_seg = pydicom.dcmread(previous.seg_path)
        # Side work runs beside the building: the NIfTI mask (zlib and the validators'
        # processes leave the GIL free), the SEG's validation while the SR and the key
        # images are built, then theirs. No DICOM object is written before all pass.
        with ThreadPoolExecutor(2, thread_name_prefix="hemex-report") as side:
            nifti = None if reused_seg is not None else side.submit(_write_mask_nifti, folder, geometry, mask)
            checks: list[Future[list[bytes]]] = []
            with timer.stage("build"):
                segmentation = reused_seg if reused_seg is not None else build_segmentation(
                    headers, geometry, mask, settings.report, analysis.software_version)
                if reused_seg is None:
                    checks.append(side.submit(self._encode_and_validate, [segmentation]))
                predecessor = pydicom.dcmread(previous.sr_path) if previous is not None else None
                sr = build_measurement_report(analysis, headers, segmentation, settings.report,
                                              predecessor_sr=predecessor)
                key_images = None
                if reused_seg is None and settings.report.send_key_images:
                    key_images = build_key_images(analysis, headers, geometry, mask, settings.report)
                capture = None
                if key_image is not None:
                    instance_number = int(predecessor.InstanceNumber) + 1 if predecessor is not None else 1
                    capture = build_key_image_capture(key_image.picture, key_image.source, analysis,
                                                      settings.report, instance_number=instance_number,
                                                      frame_number=key_image.frame_number,
                                                      orientation=key_image.orientation)
            # Sent in this order: what the SR references reaches PACS before the SR.
            after_seg: list[tuple[str, str, Dataset]] = []
            if key_images is not None:
                after_seg.append(("key-images.dcm", "KO", key_images))
            if capture is not None:
                after_seg.append(("key-image-capture.dcm", "OT", capture))
            after_seg.append(("sr.dcm", "SR", sr))
            checks.append(side.submit(self._encode_and_validate, [ds for _, _, ds in after_seg]))
            built = ([("seg.dcm", "SEG", segmentation)] if reused_seg is None else []) + after_seg
            with timer.stage("png"):
                png = png_bytes(key_image.picture) if key_image is not None else None
            with timer.stage("validate"):  # what the side work takes beyond the building
                encoded = [data for check in checks for data in check.result()]  # the bytes validated are written
                if nifti is not None:
                    nifti.result()
        with timer.stage("write"):
            objects = []
            for (name, modality, ds), data in zip(built, encoded, strict=True):
                write_atomically(folder / name, data)
                objects.append(ReportObject(name, modality, str(ds.SOPInstanceUID), folder / name))
            reused: tuple[ReportObject, ...] = ()
            if reused_seg is not None and previous is not None and previous.seg_path is not None:
                reused = (ReportObject("seg.dcm", "SEG", str(reused_seg.SOPInstanceUID), previous.seg_path),)
            if png is not None:
                write_atomically(folder / KEY_IMAGE_PNG, png)
            oru_path, control_id = self._write_oru(record, folder)
            alert = self._write_alert(record, png)
            summary = _summary(record, mask, {**analysis.stage_seconds, **timer.seconds})
            summary["key_image_png"] = KEY_IMAGE_PNG if png is not None else None
            write_atomically(folder / "summary.json", json.dumps(summary, indent=2, default=str).encode())
        return ReportBundle(study_uid=record.study_uid, input_key=record.input_key, completion=analysis.completion,
                            risk_category=analysis.risk_category, folder=folder, objects=tuple(objects),
                            reused_objects=reused, oru_path=oru_path, oru_control_id=control_id, alert=alert,
                            summary=summary)

    def _encode_and_validate(self, datasets: list[Dataset]) -> list[bytes]:
        """The objects' file bytes, checked by the validators when
        ``report.validate_with_dicom3tools``.

        Raises
        ------
        ReportBuildError
            An object cannot be encoded or fails validation.
        """
        encoded = [encode_dataset(ds) for ds in datasets]
        if self._settings.report.validate_with_dicom3tools:
            validate_report_objects(datasets, encoded=encoded, timeout_s=self._settings.report.validation_timeout_s,
                                    sr_validator=self._sr_validator)
        return encoded

    def _write_oru(self, record: AnalysisRecord, folder: Path) -> tuple[Path | None, str | None]:
        """The ORU^R01 for the EHR, when an outbound HL7 peer is configured."""
        if not self._settings.hl7.enabled or self._settings.hl7.outbound_host is None:
            return None, None
        message = build_oru_r01(record.analysis, self._settings.hl7)
        write_atomically(folder / ORU_FILE_NAME, message)
        return folder / ORU_FILE_NAME, oru_control_id(message)

    def _write_alert(self, record: AnalysisRecord, key_image_png: bytes | None) -> AlertFiles | None:
        """The alert the rules raise (not yet raised for the study), written to disk."""
        def raised(key: str) -> bool:
            with self._db.reading() as repos:
                return repos.alerts.raised(record.study_uid, key)

        def acknowledgement() -> AlertAcknowledgement | None:
            if self._links is None:
                return None
            return acknowledgement_for(self._db, record.analysis.identity, self._links,
                                       self._settings.alerts.acknowledgement, self._clock())

        return prepare_alert(record.analysis, self._settings.alerts, self._settings.results_dir, raised,
                             key_image_png=key_image_png, acknowledgement=acknowledgement)


def _write_mask_nifti(folder: Path, geometry: VolumeGeometry, mask: HematomaMask) -> None:
    """``mask.nii.gz``: the hematoma mask on the CT's grid, for research tools."""
    write_atomically(folder / "mask.nii.gz", gzipped(mask_to_nifti(geometry, mask), compresslevel=1))


def _summary(record: AnalysisRecord, mask: HematomaMask, stage_seconds: dict[str, float]) -> dict[str, Any]:
    """The JSON-able summary kept with each result (no pixel data, no PHI)."""
    a = record.analysis
    return {
        "study_handle": a.identity.handle,
        "completion": a.completion,
        "risk_category": a.risk_category,
        "measurements": asdict(a.measurements),
        "prediction": asdict(a.prediction) if a.prediction else None,
        "brain_score": asdict(a.brain_score) if a.brain_score else None,
        "clinical_present": {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                             for k, v in a.clinical.present().items()},
        "clinical_missing": list(a.clinical.missing(PREDICTOR_VARIABLES)),
        "skipped_series": [s.reason for s in a.skipped_series],
        "stage_seconds": stage_seconds,
        "mask_voxels": int(mask.mask.sum()),
        "software_version": a.software_version,
    }
