"""Applies stored HL7 messages to the clinical tables, after their ACK, in arrival order.

The listener only stores; this worker reads each stored message back, maps it and
applies it in one transaction that also marks the message processed. Messages stored
but not yet applied when the node stopped are applied at the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from daemon.clinical.clinical_store import AppliedMessage, apply_message
from daemon.clinical.hl7_parsing import check_message, extract_content
from daemon.state.database import Database

log = logging.getLogger(__name__)

# Called with the patient key after a message changed that patient's clinical data.
ClinicalUpdateCallback = Callable[[int], None]

_STOP = -1


class ClinicalProcessor:
    """One worker thread that applies messages in the order they were stored.

    Parameters
    ----------
    db
        The node's database.
    local_code_map
        ``Hl7Settings.local_code_map`` (already validated).
    on_clinical_update
        Optional; called on the worker thread with the patient key after each message
        that stored observations or changed demographics or identifiers.
    """

    def __init__(self, db: Database, local_code_map: Mapping[str, str],
                 on_clinical_update: ClinicalUpdateCallback | None = None) -> None:
        self._db = db
        self._local_code_map = dict(local_code_map)
        self._on_clinical_update = on_clinical_update
        self._queue: queue.Queue[int] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, message_id: int) -> None:
        """Queue a newly stored message (called by the listener)."""
        self._queue.put(message_id)

    def start(self) -> int:
        """Queue every stored message not applied yet, then start the worker; returns that count."""
        pending = [int(r["id"]) for r in self._db.query(
            "SELECT id FROM hl7_messages WHERE processed_at IS NULL ORDER BY id")]
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
                applied = self._apply_or_record(message_id)
                if applied is not None and applied.patient_key is not None:
                    self._notify(applied.patient_key)
            finally:
                self._queue.task_done()

    def _apply_or_record(self, message_id: int) -> AppliedMessage | None:
        try:
            return self.process(message_id)
        except Exception as exc:
            # Boundary: a message that cannot be applied must not stop the intake of the
            # next ones; the error is kept durably on its row (processed_at set,
            # process_error named), not just logged.
            log.exception("hl7 message not applied message=%d error=%s", message_id, type(exc).__name__)
            with self._db.transaction() as conn:
                conn.execute("UPDATE hl7_messages SET process_error = ?, processed_at = ? WHERE id = ?",
                             (f"{type(exc).__name__}: {exc}"[:500], time.time(), message_id))
            return None

    def _notify(self, patient_key: int) -> None:
        if self._on_clinical_update is None:
            return
        try:
            self._on_clinical_update(patient_key)
        except Exception:
            # Boundary to the pipeline's callback. The early wake-up is an optimisation:
            # the final report still runs when the configured wait ends, so a failing
            # callback delays it but loses nothing.
            log.exception("clinical update callback failed patient_key=%d", patient_key)

    def process(self, message_id: int) -> AppliedMessage | None:
        """Apply one stored message now (idempotent: skipped when already processed)."""
        rows = self._db.query("SELECT path, processed_at FROM hl7_messages WHERE id = ?", (message_id,))
        if not rows or rows[0]["processed_at"] is not None:
            return None
        # Parsed with hl7apy when it was received; the header and text checks run again.
        checked = check_message(Path(rows[0]["path"]).read_bytes(), parse=False)
        content = extract_content(checked)
        with self._db.transaction() as conn:
            applied = apply_message(conn, message_id, checked.purpose, content, self._local_code_map)
            conn.execute("UPDATE hl7_messages SET processed_at = ? WHERE id = ?", (time.time(), message_id))
        log.info("hl7 message applied message=%d type=%s observations=%d rejected=%d", message_id,
                 checked.header.type_name, applied.observations_stored, len(applied.rejections))
        return applied
