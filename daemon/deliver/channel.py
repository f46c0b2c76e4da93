"""The seam between the outbox and a way of sending (DICOM, HL7, webhook, e-mail).

The outbox speaks to one protocol, ``DeliveryChannel.send_batch``, because a DICOM
destination must receive a whole pass over ONE association (one association per image
is an anti-pattern). Channels that naturally send one item at a time (HL7 MLLP, webhook,
e-mail) implement the simpler ``SingleItemChannel.send`` and are wrapped by
``as_batch_channel``; the outbox does that wrapping itself, so either kind can be
registered.

Error contract
--------------
- ``send_batch`` returns one outcome per path, in order: ``None`` when delivered, a
  ``DeliveryError`` (retried later) or a ``PermanentDeliveryError`` (dead letter).
- ``send_batch`` calls ``on_outcome(index, outcome)``, when given, as soon as an item's
  outcome is known and before the next item is sent, so the outbox commits each
  delivery at once: a crash mid-batch then re-sends at most the item whose success was
  not yet committed, not every item the peer already took. Outcomes it was not called
  for are taken from the returned list.
- ``send_batch`` may instead raise ``DeliveryError`` to say that nothing in the batch was
  sent (e.g. the association was refused); every item then counts one failed attempt.
- ``send`` returns when delivered and raises ``DeliveryError`` /
  ``PermanentDeliveryError`` otherwise.
- Anything else raised is a bug and is not swallowed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from domain.errors import DeliveryError

Outcome = DeliveryError | None
OutcomeCallback = Callable[[int, Outcome], None]


@runtime_checkable
class DeliveryChannel(Protocol):
    """Sends a batch of stored files to one named destination."""

    def send_batch(self, destination: str, paths: Sequence[Path],
                   on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        ...


@runtime_checkable
class SingleItemChannel(Protocol):
    """Sends one stored file to one named destination (e.g. ``Hl7MllpChannel``)."""

    def send(self, destination: str, path: Path) -> None:
        ...


class PerItemBatchChannel:
    """A ``DeliveryChannel`` that sends each path with a plain ``send`` channel.

    Items are independent: one failing does not stop the others, because each is its
    own connection (HTTP request, SMTP session, MLLP exchange).
    """

    def __init__(self, channel: SingleItemChannel) -> None:
        self.channel = channel

    def send_batch(self, destination: str, paths: Sequence[Path],
                   on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for index, path in enumerate(paths):
            try:
                self.channel.send(destination, path)
            except DeliveryError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
            if on_outcome is not None:
                on_outcome(index, outcomes[-1])
        return outcomes


def as_batch_channel(channel: DeliveryChannel | SingleItemChannel) -> DeliveryChannel:
    """``channel`` itself when it sends batches, else wrapped in ``PerItemBatchChannel``."""
    if isinstance(channel, DeliveryChannel):
        return channel
    if isinstance(channel, SingleItemChannel):
        return PerItemBatchChannel(channel)
    raise TypeError(f"{type(channel).__name__} has neither send_batch() nor send()")
