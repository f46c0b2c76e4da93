"""The persistent outbox: every outbound delivery is a row that survives restarts.

Promises
--------
- Idempotent enqueue by (channel, destination, item_key): the same SOP Instance UID
  (HL7 control id, alert key) is queued, and so sent, once per destination, even after a
  restart, because the row stays after delivery.
- One pass groups due items by (channel, destination), so a DICOM destination gets ONE
  association per pass.
- A retryable failure (``DeliveryError``) backs off exponentially with jitter, capped at
  ``retry_max_s``; a ``PermanentDeliveryError``, a missing file, an unknown channel or
  ``max_attempts`` failures move the item to the dead-letter list (state ``dead``),
  logged with the reason and listed by ``dead_letters()`` until ``retry_dead()``.
- At-least-once: an item is marked delivered right after its peer accepted it, before
  the next item of the batch is sent (the channel's ``on_outcome``); only a crash
  between the peer's success and that commit can send it again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from sqlite3 import Connection

from daemon.config import OutboxSettings
from daemon.deliver.channel import DeliveryChannel, SingleItemChannel, as_batch_channel
from daemon.state.database import Database
from domain.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)

# Retry delays are drawn from [1 - JITTER, 1] x the exponential delay, so peers coming
# back are not hit by every node (or every item) at the same instant.
JITTER = 0.2
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class OutboxItem:
    """One row of the outbox as the CLI and tests see it."""

    id: int
    channel: str
    destination: str
    item_key: str
    path: Path
    study_uid: str | None
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    delivered_at: float | None


@dataclass
class DeliveryPassResult:
    """What one ``deliver_due`` pass did (item ids by outcome)."""

    delivered: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return len(self.delivered) + len(self.retrying) + len(self.dead)


class Outbox:
    """Durable queue of deliveries over the ``outbox`` table.

    Parameters
    ----------
    db
        The node database.
    settings
        Retry schedule and dead-letter threshold.
    channels
        Channel name (``dicom``, ``hl7``, ``webhook``, ``email``) -> channel; a channel
        with only ``send(destination, path)`` is wrapped with ``as_batch_channel``.
    clock
        Seconds since the epoch; injected by tests.
    rng
        Source of the retry jitter; injected by tests.
    """

    def __init__(self, db: Database, settings: OutboxSettings,
                 channels: Mapping[str, DeliveryChannel | SingleItemChannel],
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self._db = db
        self._settings = settings
        self._channels = {name: as_batch_channel(channel) for name, channel in channels.items()}
        self._clock = clock
        self._rng = rng or random.Random()
        # Passes are exclusive so a manual pass and the scheduled one never send an item twice.
        self._pass_lock = threading.Lock()

    # Queueing -------------------------------------------------------------------------
    def enqueue(self, channel: str, destination: str, item_key: str, path: Path,
                study_uid: str | None = None, *, conn: Connection | None = None) -> bool:
        """Queue ``path`` for ``destination``; False when this item was queued before.

        ``conn`` lets a caller enqueue inside its own open transaction (e.g. together
        with the row that says an alert was raised).
        """
        params = (channel, destination, item_key, str(path), study_uid, self._clock(), self._clock())
        sql = ("INSERT OR IGNORE INTO outbox(channel, destination, item_key, path, study_uid,"
               " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
        if conn is not None:
            added = conn.execute(sql, params).rowcount == 1
        else:
            with self._db.transaction() as own:
                added = own.execute(sql, params).rowcount == 1
        if added:
            log.info("delivery queued channel=%s destination=%s", channel, destination)
        return added

    # Delivering -----------------------------------------------------------------------
    def deliver_due(self, limit: int | None = None) -> DeliveryPassResult:
        """Send every pending item whose time has come (at most ``limit``), once each."""
        result = DeliveryPassResult()
        with self._pass_lock:
            rows = self._db.query(
                "SELECT id, channel, destination, path, attempts FROM outbox"
                " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id"
                + (" LIMIT ?" if limit is not None else ""),
                (self._clock(), limit) if limit is not None else (self._clock(),))
            groups: dict[tuple[str, str], list] = {}
            for row in rows:
                groups.setdefault((row["channel"], row["destination"]), []).append(row)
            for (channel_name, destination), items in groups.items():
                self._deliver_group(channel_name, destination, items, result)
        if result.attempted:
            log.info("delivery pass delivered=%d retrying=%d dead=%d", len(result.delivered),
                     len(result.retrying), len(result.dead))
        return result

    def _deliver_group(self, channel_name: str, destination: str, items: list,
                       result: DeliveryPassResult) -> None:
        channel = self._channels.get(channel_name)
        if channel is None:
            for item in items:
                self._record(item, PermanentDeliveryError(f"no channel {channel_name!r} configured"), result)
            return
        sendable = []
        for item in items:
            if Path(item["path"]).is_file():
                sendable.append(item)
            else:
                self._record(item, PermanentDeliveryError(f"file to send is missing: {Path(item['path']).name}"),
                             result)
        if not sendable:
            return
        paths = [Path(item["path"]) for item in sendable]
        recorded: set[int] = set()

        def record_now(index: int, outcome: DeliveryError | None) -> None:
            # Committed before the next item goes out: a crash later in the batch does not
            # send this one again.
            self._record(sendable[index], outcome, result)
            recorded.add(index)

        started = time.monotonic()
        try:
            outcomes: Sequence[DeliveryError | None] = channel.send_batch(destination, paths, record_now)
        except DeliveryError as exc:  # nothing in the batch went out
            outcomes = [exc] * len(sendable)
        if len(outcomes) != len(sendable):
            raise RuntimeError(f"channel {channel_name} returned {len(outcomes)} outcomes for {len(sendable)} items")
        log.debug("batch sent channel=%s destination=%s items=%d seconds=%.3f", channel_name,
                  destination, len(sendable), time.monotonic() - started)
        for index, (item, outcome) in enumerate(zip(sendable, outcomes)):
            if index not in recorded:
                self._record(item, outcome, result)

    def _record(self, item, outcome: DeliveryError | None, result: DeliveryPassResult) -> None:  # type: ignore[no-untyped-def]
        now = self._clock()
        item_id = int(item["id"])
        with self._db.transaction() as conn:
            if outcome is None:
                conn.execute("UPDATE outbox SET state = 'delivered', attempts = attempts + 1,"
                             " delivered_at = ?, last_error = NULL WHERE id = ?", (now, item_id))
                result.delivered.append(item_id)
                return
            attempts = int(item["attempts"]) + 1
            reason = f"{type(outcome).__name__}: {outcome}"[:MAX_ERROR_CHARS]
            permanent = isinstance(outcome, PermanentDeliveryError)
            if permanent or attempts >= self._settings.max_attempts:
                conn.execute("UPDATE outbox SET state = 'dead', attempts = ?, last_error = ? WHERE id = ?",
                             (attempts, reason, item_id))
                result.dead.append(item_id)
            else:
                next_at = now + self.retry_delay(attempts)
                conn.execute("UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
                             " WHERE id = ?", (attempts, next_at, reason, item_id))
                result.retrying.append(item_id)
        if item_id in result.dead:
            log.error("delivery dead-lettered id=%d channel=%s destination=%s attempts=%d permanent=%s"
                      " reason=%r", item_id, item["channel"], item["destination"], attempts, permanent, reason)
        else:
            log.warning("delivery failed id=%d channel=%s destination=%s attempts=%d reason=%r",
                        item_id, item["channel"], item["destination"], attempts, reason)

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure: exponential, jittered, capped."""
        base = min(self._settings.retry_max_s,
                   self._settings.retry_initial_s * 2.0 ** min(attempts - 1, 60))
        return base * (1.0 - JITTER * self._rng.random())

    # Inspecting and repairing ----------------------------------------------------------
    def dead_letters(self) -> list[OutboxItem]:
        """Items that permanently failed, oldest first, with the reason."""
        return self.items(state="dead")

    def items(self, state: str | None = None) -> list[OutboxItem]:
        """Every item (or those in ``state``), by id."""
        rows = self._db.query("SELECT * FROM outbox" + (" WHERE state = ?" if state else "") + " ORDER BY id",
                              (state,) if state else ())
        return [OutboxItem(row["id"], row["channel"], row["destination"], row["item_key"], Path(row["path"]),
                           row["study_uid"], row["state"], row["attempts"], row["next_attempt_at"],
                           row["last_error"], row["created_at"], row["delivered_at"]) for row in rows]

    def retry_dead(self, ids: Sequence[int] | None = None) -> int:
        """Queue dead items (all, or those ``ids``) again, due now; returns how many."""
        now = self._clock()
        with self._db.transaction() as conn:
            if ids is None:
                count = conn.execute("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"
                                     " WHERE state = 'dead'", (now,)).rowcount
            else:
                marks = ",".join("?" for _ in ids)
                count = conn.execute("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"
                                     f" WHERE state = 'dead' AND id IN ({marks})", (now, *ids)).rowcount
        log.info("dead letters queued again count=%d", count)
        return count

    def pending_count(self) -> int:
        """Items not yet delivered nor dead."""
        return int(self._db.query("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")[0]["n"])

    def counts_by_state(self) -> dict[str, int]:
        """``{"pending": n, "delivered": n, "dead": n}`` (states with no item are absent)."""
        rows = self._db.query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}
