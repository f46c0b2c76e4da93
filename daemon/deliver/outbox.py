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

from daemon.audit_log import AuditLog
from daemon.config import OutboxSettings
from daemon.deliver.channel import DeliveryChannel, SingleItemChannel, as_batch_channel
from daemon.state.database import Database
from domain.delivery import Delivery, DeliveryRequest, DeliveryState
from domain.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)

# Retry delays are drawn from [1 - JITTER, 1] x the exponential delay, so peers coming
# back are not hit by every node (or every item) at the same instant.
JITTER = 0.2
MAX_ERROR_CHARS = 500
_ALERT_CHANNELS = frozenset({"webhook", "email"})


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
    """Sends what the ``outbox`` table holds, and records each outcome.

    Parameters
    ----------
    db
        The node database.
    settings
        Retry schedule and dead-letter threshold.
    channels
        Channel name (``dicom``, ``hl7``, ``webhook``, ``email``) -> channel; a channel
        with only ``send(destination, path)`` is wrapped with ``as_batch_channel``.
    audit
        Where each delivery is recorded (who received what).
    clock
        Seconds since the epoch; injected by tests.
    rng
        Source of the retry jitter; injected by tests.
    owner, lease_s
        This node's name and how long a claimed item stays its own (a pass longer than
        that may see another node send the item too: keep it above the slowest pass).
    """

    def __init__(self, db: Database, settings: OutboxSettings,
                 channels: Mapping[str, DeliveryChannel | SingleItemChannel], audit: AuditLog | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 owner: str = "node", lease_s: float = 300.0,
                 endpoints: Mapping[tuple[str, str], str] | None = None) -> None:
        self._db = db
        self._settings = settings
        # Items a pass claims carry this node's name and a lease, so that another node
        # sharing the database neither sends them at the same time nor loses them when
        # this one dies mid-pass.
        self._owner = owner
        self._lease_s = lease_s
        self._channels = {name: as_batch_channel(channel) for name, channel in channels.items()}
        self._audit = audit
        # (channel, destination name) -> where it really went, for the audit log: the
        # configuration may name another endpoint next year.
        self._endpoints = dict(endpoints or {})
        self._clock = clock
        self._rng = rng or random.Random()
        # Passes are exclusive so a manual pass and the scheduled one never send an item twice.
        self._pass_lock = threading.Lock()

    # Queueing -------------------------------------------------------------------------
    def enqueue(self, request: DeliveryRequest) -> bool:
        """Queue one item in a transaction of its own; False when it was queued before."""
        with self._db.transaction() as repos:
            added = repos.outbox.enqueue(request, self._clock())
        if added:
            log.info("delivery queued channel=%s destination=%s", request.channel.value, request.destination)
        return added

    # Delivering -----------------------------------------------------------------------
    def deliver_due(self, limit: int | None = None) -> DeliveryPassResult:
        """Send every pending item whose time has come (at most ``limit``), once each."""
        result = DeliveryPassResult()
        with self._pass_lock:
            with self._db.transaction() as repos:
                due = repos.outbox.claim_due(self._clock(), self._owner, self._lease_s, limit)
            groups: dict[tuple[str, str], list[Delivery]] = {}
            for item in due:
                groups.setdefault((item.channel, item.destination), []).append(item)
            for (channel_name, destination), items in groups.items():
                self._deliver_group(channel_name, destination, items, result)
        if result.attempted:
            log.info("delivery pass delivered=%d retrying=%d dead=%d", len(result.delivered),
                     len(result.retrying), len(result.dead))
        return result

    def _deliver_group(self, channel_name: str, destination: str, items: list[Delivery],
                       result: DeliveryPassResult) -> None:
        channel = self._channels.get(channel_name)
        if channel is None:
            for item in items:
                self._record(item, PermanentDeliveryError(f"no channel {channel_name!r} configured"), result)
            return
        sendable = []
        for item in items:
            if item.path.is_file():
                sendable.append(item)
            else:
                self._record(item, PermanentDeliveryError(f"file to send is missing: {item.path.name}"), result)
        if not sendable:
            return
        recorded: set[int] = set()

        def record_now(index: int, outcome: DeliveryError | None) -> None:
            # Committed before the next item goes out: a crash later in the batch does not
            # send this one again.
            self._record(sendable[index], outcome, result)
            recorded.add(index)

        started = time.monotonic()
        try:
            outcomes: Sequence[DeliveryError | None] = channel.send_batch(
                destination, [item.path for item in sendable], record_now)
        except DeliveryError as exc:  # nothing in the batch went out
            outcomes = [exc] * len(sendable)
        if len(outcomes) != len(sendable):
            raise RuntimeError(f"channel {channel_name} returned {len(outcomes)} outcomes for {len(sendable)} items")
        log.debug("batch sent channel=%s destination=%s items=%d seconds=%.3f", channel_name,
                  destination, len(sendable), time.monotonic() - started)
        for index, (item, outcome) in enumerate(zip(sendable, outcomes)):
            if index not in recorded:
                self._record(item, outcome, result)

    def _record(self, item: Delivery, outcome: DeliveryError | None, result: DeliveryPassResult) -> None:
        now = self._clock()
        attempts = item.attempts + 1
        reason = "" if outcome is None else f"{type(outcome).__name__}: {outcome}"[:MAX_ERROR_CHARS]
        permanent = isinstance(outcome, PermanentDeliveryError)
        with self._db.transaction() as repos:
            if outcome is None:
                repos.outbox.mark_delivered(item.id, now)
                if item.channel in _ALERT_CHANNELS:  # an alert's step: sent, delivered
                    repos.alerts.on_delivered(item.id, now)
            elif permanent or attempts >= self._settings.max_attempts:
                repos.outbox.mark_dead(item.id, attempts, reason)
            else:
                repos.outbox.mark_retry(item.id, attempts, reason, now + self.retry_delay(attempts))
        if outcome is None:
            result.delivered.append(item.id)
            if self._audit is not None:
                self._audit.record("delivered", channel=item.channel, destination=item.destination,
                                   endpoint=self._endpoints.get((item.channel, item.destination)),
                                   item_key=item.item_key, study_uid=item.study_uid, attempts=attempts)
        elif permanent or attempts >= self._settings.max_attempts:
            result.dead.append(item.id)
            log.error("delivery dead-lettered id=%d channel=%s destination=%s attempts=%d permanent=%s"
                      " reason=%r", item.id, item.channel, item.destination, attempts, permanent, reason)
            if self._audit is not None:
                self._audit.record("delivery-failed", channel=item.channel, destination=item.destination,
                                   endpoint=self._endpoints.get((item.channel, item.destination)),
                                   item_key=item.item_key, study_uid=item.study_uid, reason=reason)
        else:
            result.retrying.append(item.id)
            log.warning("delivery failed id=%d channel=%s destination=%s attempts=%d reason=%r",
                        item.id, item.channel, item.destination, attempts, reason)

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure: exponential, jittered, capped."""
        base = min(self._settings.retry_max_s,
                   self._settings.retry_initial_s * 2.0 ** min(attempts - 1, 60))
        return base * (1.0 - JITTER * self._rng.random())

    # Inspecting and repairing ----------------------------------------------------------
    def items(self, state: DeliveryState | None = None) -> list[Delivery]:
        """Every item (or those in ``state``), by id."""
        with self._db.reading() as repos:
            return repos.outbox.items(state)

    def dead_letters(self) -> list[Delivery]:
        """Items that permanently failed, oldest first, with the reason."""
        return self.items(DeliveryState.DEAD)

    def retry_dead(self, ids: Sequence[int] | None = None) -> int:
        """Queue dead items (all, or those ``ids``) again, due now; returns how many."""
        return retry_dead_letters(self._db, self._clock(), ids)

    def counts_by_state(self) -> dict[str, int]:
        """``{"pending": n, "delivered": n, "dead": n}`` (states with no item are absent)."""
        with self._db.reading() as repos:
            return repos.outbox.counts_by_state()


def retry_dead_letters(db: Database, now: float, ids: Sequence[int] | None = None) -> int:
    """Queue dead items (all, or those ``ids``) again, due at ``now``; returns how many.

    The one way dead letters are retried: the node, ``hemex retry-dead`` and the console.
    """
    with db.transaction() as repos:
        count = repos.outbox.retry_dead(now, ids)
    log.info("dead letters queued again count=%d", count)
    return count
