"""What the IT person asks the node: counts by state, failed studies, dead letters, and
the repairs: retry dead letters, replay a study."""

from __future__ import annotations

import time
from typing import Any

from daemon.config import Settings
from daemon.deliver.outbox import retry_dead_letters
from daemon.state.database import Database
from domain.delivery import DeliveryState
from domain.jobs import JobKind
from domain.study import StudyState


def open_database(settings: Settings) -> Database:
    """The node's database for a command-line tool (it must exist already).

    Raises
    ------
    FileNotFoundError
        No node database at the configured place (the message says where it looked).
    """
    if settings.database.url is None and not settings.database_path.exists():
        raise FileNotFoundError(f"no node database at {settings.database_path.resolve()}"
                                " (run from the node's folder or give --config / --data-dir)")
    return Database.for_settings(settings)


def node_status(settings: Settings) -> dict[str, Any]:
    """Counts of studies, series, jobs and outbox items by state, and the studies that
    could not be analysed, each with its reason (no PHI: handles and reasons)."""
    db = open_database(settings)
    with db.reading() as repos:
        figures = repos.monitoring.figures()
        not_analysed = repos.studies.in_states((StudyState.FAILED, StudyState.NO_SERIES))
    jobs: dict[str, int] = {}
    for (_, state), count in figures.jobs.items():
        jobs[state] = jobs.get(state, 0) + count
    outbox: dict[str, int] = {}
    for (_, state), count in figures.outbox.items():
        outbox[state] = outbox.get(state, 0) + count
    return {
        "studies": figures.studies, "series": figures.series, "jobs": jobs, "outbox": outbox,
        "instances": {"stored": figures.instances},
        "studies_not_analysed": [{"study": s.identity.handle, "state": s.state.value, "reason": s.reason}
                                 for s in not_analysed],
    }


def dead_letters(settings: Settings) -> list[dict[str, object]]:
    """Deliveries that permanently failed, with the reason (no PHI: ids and channels)."""
    db = open_database(settings)
    with db.reading() as repos:
        items = repos.outbox.items(state=DeliveryState.DEAD)
    return [{"id": item.id, "channel": item.channel, "destination": item.destination, "item_key": item.item_key,
             "attempts": item.attempts, "last_error": item.last_error, "created_at": item.created_at}
            for item in items]


def retry_dead(settings: Settings, ids: list[int] | None = None) -> int:
    """Put dead-letter items back in the queue (after the peer was fixed)."""
    return retry_dead_letters(open_database(settings), time.time(), ids)


def replay_study(settings: Settings, study_uid: str) -> str:
    """Queue the study's analysis again from its stored images; returns its handle.

    Raises
    ------
    KeyError
        The node holds no such study.
    """
    db = open_database(settings)
    now = time.time()
    with db.transaction() as repos:
        identity = repos.studies.identity(study_uid)
        repos.jobs.enqueue(JobKind.REPLAY_STUDY, study_uid, now, now)
    return identity.handle
