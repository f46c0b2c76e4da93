"""Retention (scheduled by the node every ``retention.interval_h``): purge spool images and
result folders (reports and follow-up reports) after N days, never before delivery.

A study qualifies when its files are older than the configured age, every outbox row of
the study is 'delivered' (a pending or dead row keeps everything, since a resend needs
the file) and no job of the study is pending or running. Database rows are kept, so a
re-sent instance is still acknowledged as a duplicate and not analysed again.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon.config import Settings
from daemon.state.database import Database
from daemon.state.repositories import Repositories
from domain.handles import study_handle

log = logging.getLogger(__name__)

_DAY_S = 86400.0
RETENTION_TASK = "retention"


@dataclass
class PurgeReport:
    """What one pass purged and what it kept back because delivery is unfinished."""

    image_studies: list[str] = field(default_factory=list)  # study handles
    result_folders: int = 0
    bytes_freed: int = 0
    kept_undelivered: list[str] = field(default_factory=list)  # study handles


def _study_settled(repos: Repositories, study_uid: str) -> bool:
    """True when every outbox item of the study is delivered and no job of it is open."""
    return repos.outbox.unsettled_for(study_uid) == 0 and repos.jobs.open_for(study_uid) == 0


def _remove_tree(path: Path, inside: Path) -> int:
    """Delete ``path`` (which must lie under ``inside``); the bytes it held."""
    path, inside = path.resolve(), inside.resolve()
    if inside not in path.parents:
        raise ValueError(f"refusing to delete {path}: not under {inside}")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    for parent in path.parents:  # folders the purge left empty, up to the root
        if parent == inside or any(parent.iterdir()):
            break
        parent.rmdir()
    return size


def purge_expired(db: Database, settings: Settings, now: float | None = None) -> PurgeReport:
    """Purge expired spool images and result folders of settled studies, and keep the
    figures of this pass for the metrics (``maintenance_runs``).

    Parameters
    ----------
    db
        The node's database.
    settings
        ``settings.retention`` gives the ages; ``spool_dir``/``results_dir`` the roots.
    now
        Epoch seconds (injected by tests); defaults to the current time.
    """
    report = PurgeReport()
    retention = settings.retention
    if not retention.enabled:
        return report
    now = time.time() if now is None else now
    with db.reading() as repos:
        image_studies = repos.images.studies_received_before(now - retention.images_days * _DAY_S)
        old_results = repos.results.created_before(now - retention.results_days * _DAY_S)
        old_folders = [(r.study_uid, r.folder) for r in old_results]
        old_folders += repos.followups.report_folders_before(now - retention.results_days * _DAY_S)
    for study_uid in image_studies:
        folder = settings.spool_dir / study_uid
        if not folder.is_dir():
            continue
        with db.reading() as repos:
            settled = _study_settled(repos, study_uid)
        if not settled:
            report.kept_undelivered.append(study_handle(study_uid))
            continue
        report.bytes_freed += _remove_tree(folder, settings.spool_dir)
        report.image_studies.append(study_handle(study_uid))
    for study_uid, folder in old_folders:  # reports and follow-up reports
        if not folder.is_dir() or folder.resolve() == settings.results_dir.resolve():
            continue
        with db.reading() as repos:
            settled = _study_settled(repos, study_uid)
        if not settled:
            handle = study_handle(study_uid)
            if handle not in report.kept_undelivered:
                report.kept_undelivered.append(handle)
            continue
        report.bytes_freed += _remove_tree(folder, settings.results_dir)
        report.result_folders += 1
    with db.transaction() as repos:
        repos.maintenance.record_run(RETENTION_TASK, now, {
            "image_studies_purged": len(report.image_studies), "result_folders_purged": report.result_folders,
            "bytes_freed": report.bytes_freed, "studies_kept_undelivered": len(report.kept_undelivered)})
    if report.image_studies or report.result_folders or report.kept_undelivered:
        log.info("retention purge image_studies=%d result_folders=%d bytes_freed=%d kept_undelivered=%s",
                 len(report.image_studies), report.result_folders, report.bytes_freed,
                 ",".join(report.kept_undelivered) or "-")
    return report


__all__ = ["PurgeReport", "purge_expired"]
