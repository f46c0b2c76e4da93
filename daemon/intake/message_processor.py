"""Applies stored HL7 messages to the clinical tables, after their ACK, in arrival order.

The listener only stores; this worker reads each stored message back, maps it and
applies it in one transaction that also marks the message processed and, when the
patient's clinical data changed, queues a ``clinical_update`` job for that patient (the
analyse stage then finalises the patient's waiting studies). Messages stored but not yet
applied when the node stopped are applied at the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from daemon.intake.hl7_parsing import MessageContent, check_message, extract_content
from daemon.intake.observation_mapping import Rejection, map_observation
from daemon.jobs.wakeup import Wakeup
from daemon.state.database import Database
from daemon.state.repositories import Repositories
from domain.clinical import Demographics
from domain.followup import Procedure
from domain.jobs import JobKind

log = logging.getLogger(__name__)

_STOP = -1


@dataclass(frozen=True)
class AppliedMessage:
    """What applying one message changed."""

    patient_key: int | None
    observations_stored: int
    rejections: tuple[Rejection, ...]


def apply_message(repos: Repositories, message_id: int, purpose: str, content: MessageContent,
                  local_code_map: Mapping[str, str], now: float) -> AppliedMessage:
    """Apply one accepted message inside the caller's transaction."""
    if not content.identifiers:
        return AppliedMessage(None, 0, ())
    key = repos.clinical.patient_for(content.identifiers, now)
    if content.birth_date is not None or content.sex is not None:
        # ADT is authoritative for demographics; other messages only fill gaps.
        demographics = Demographics(content.birth_date.isoformat() if content.birth_date else None, content.sex)
        repos.clinical.update_demographics(key, demographics, purpose in ("demographics", "merge"), now)
    if purpose == "merge":
        repos.clinical.merge(key, content.merged_identifiers, now)
    stored = 0
    rejections: list[Rejection] = []
    for raw in content.observations:
        mapped = map_observation(raw, local_code_map)
        if mapped is None:
            continue
        if isinstance(mapped, Rejection):
            rejections.append(mapped)
            # No value, no identifier: only what was rejected and why.
            log.warning("hl7 observation rejected message=%d variable=%s code=%s reason=%r",
                        message_id, mapped.variable, mapped.source_code, mapped.reason)
            continue
        repos.clinical.store_observation(key, mapped, message_id, now)
        stored += 1
    for procedure in content.procedures:
        if procedure.performed_at is None or not procedure.codes:
            log.warning("hl7 procedure without %s ignored message=%d segment=%s", "time" if procedure.codes
                        else "code", message_id, procedure.segment)
            continue
        system, code = procedure.codes[0]
        repos.clinical.store_procedure(key, Procedure(system, code, procedure.performed_at,
                                                      f"{procedure.segment} of HL7 message {message_id}"),
                                       message_id, now)
        stored += 1
    return AppliedMessage(key, stored, tuple(rejections))


class MessageProcessor:
    """One worker thread that applies messages in the order they were stored.

    Parameters
    ----------
    db
        The node's database.
    local_code_map
        ``Hl7Settings.local_code_map`` (already validated).
    wakeup
        Notified when a ``clinical_update`` job was queued.
    """

    def __init__(self, db: Database, local_code_map: Mapping[str, str], wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._local_code_map = dict(local_code_map)
        self._wakeup = wakeup
        self._clock = clock
        self._queue: queue.Queue[int] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, message_id: int) -> None:
        """Queue a newly stored message (called by the listener)."""
        self._queue.put(message_id)

    def start(self) -> int:
        """Queue every stored message not applied yet, then start the worker; returns that count."""
        with self._db.reading() as repos:
            pending = repos.hl7_messages.unprocessed()
        for message_id in pending:
            self._queue.put(message_id)
        self._thread = threading.Thread(target=self._run, name="hl7-apply", daemon=True)
        self._thread.start()
        return len(pending)

    def stop(self) -> None:
        """Finish the queue's current message and stop (the rest is resumed at next start)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(30)
            self._thread = None

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """True once every submitted message has been applied (for tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            message_id = self._queue.get()
            try:
                if message_id == _STOP:
                    return
                self._apply_or_record(message_id)
            finally:
                self._queue.task_done()

    def _apply_or_record(self, message_id: int) -> None:
        try:
            self.process(message_id)
        except Exception as exc:
            # Boundary: a message that cannot be applied must not stop the intake of the
            # next ones; the error is kept durably on its row (processed, error named).
            log.exception("hl7 message not applied message=%d error=%s", message_id, type(exc).__name__)
            with self._db.transaction() as repos:
                repos.hl7_messages.mark_processed(message_id, self._clock(), f"{type(exc).__name__}: {exc}"[:500])

    def process(self, message_id: int) -> AppliedMessage | None:
        """Apply one stored message now (idempotent: skipped when already processed)."""
        with self._db.reading() as repos:
            stored = repos.hl7_messages.get(message_id)
        if stored is None or stored.processed:
            return None
        # Parsed with hl7apy when it was received; the header and text checks run again.
        checked = check_message(stored.path.read_bytes(), parse=False)
        content = extract_content(checked)
        now = self._clock()
        with self._db.transaction() as repos:
            if not repos.hl7_messages.mark_processed(message_id, now):
                return None  # another node applied it first
            # Patients and identifiers are looked up then created: one message at a time
            # across every node sharing the database, or one patient could become two.
            repos.clinical.serialise_changes()
            applied = apply_message(repos, message_id, checked.purpose, content, self._local_code_map, now)
            if applied.patient_key is not None:
                repos.jobs.enqueue(JobKind.CLINICAL_UPDATE, str(applied.patient_key), now, now)
        log.info("hl7 message applied message=%d type=%s observations=%d rejected=%d", message_id,
                 checked.header.type_name, applied.observations_stored, len(applied.rejections))
        if applied.patient_key is not None and self._wakeup is not None:
            self._wakeup.notify()
        return applied
