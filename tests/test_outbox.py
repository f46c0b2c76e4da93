"""The persistent outbox: backoff schedule, dead letters and their retry.

The channel is the real webhook channel and the peer a real ``http.server`` on a free
loopback port whose answer the test changes (503 = retry, 400 = permanent, 200 = ok);
time is an injected clock, so no test sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import OutboxSettings, WebhookTarget
from daemon.deliver.channel import PerItemBatchChannel, as_batch_channel
from daemon.deliver.outbox import JITTER, Outbox
from daemon.deliver.webhook_sender import WebhookChannel
from domain.delivery import Channel, DeliveryRequest
from tests.support.alert_peers import HttpReceiver
from tests.support.databases import open_database


class Clock:
    def __init__(self) -> None:
        self.now = 5_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver.start(status=503)
    yield server
    server.stop()


def make_outbox(tmp_path: Path, receiver: HttpReceiver, clock: Clock, max_attempts: int = 20,
                seed: int = 7) -> Outbox:
    settings = OutboxSettings(retry_initial_s=2.0, retry_max_s=60.0, max_attempts=max_attempts)
    channel = WebhookChannel([WebhookTarget(name="oncall", url=receiver.url, timeout_s=5.0)])
    return Outbox(open_database(tmp_path / "state.sqlite3"), settings, {"webhook": channel}, clock=clock,
                  rng=random.Random(seed))


def payload(tmp_path: Path, name: str = "alert.json") -> Path:
    path = tmp_path / name
    path.write_text('{"test": true}')
    return path


def test_plain_send_channel_is_adapted() -> None:
    from daemon.deliver.dicom_sender import DicomStoreChannel
    from daemon.deliver.hl7_sender import Hl7MllpChannel

    assert isinstance(as_batch_channel(WebhookChannel([])), PerItemBatchChannel)
    assert isinstance(as_batch_channel(Hl7MllpChannel({}, 1.0)), PerItemBatchChannel)
    dicom = DicomStoreChannel([])
    assert as_batch_channel(dicom) is dicom  # batches go out as they are (one association)
    with pytest.raises(TypeError):
        as_batch_channel(object())  # type: ignore[arg-type]


def test_backoff_doubles_with_jitter_up_to_the_cap(tmp_path: Path, receiver: HttpReceiver) -> None:
    clock = Clock()
    outbox = make_outbox(tmp_path, receiver, clock)
    outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "oncall", "a1", payload(tmp_path)))
    delays = []
    for _ in range(8):
        result = outbox.deliver_due()
        assert len(result.retrying) == 1
        item = outbox.items()[0]
        delays.append(item.next_attempt_at - clock.now)
        assert outbox.deliver_due().attempted == 0  # nothing is due before its time
        clock.now = item.next_attempt_at
    expected = [min(60.0, 2.0 * 2 ** n) for n in range(8)]  # 2 4 8 16 32 60 60 60
    for delay, base in zip(delays, expected):
        assert base * (1 - JITTER) <= delay <= base
    assert len({round(d, 6) for d in delays[-3:]}) == 3  # jittered, not identical at the cap
    assert outbox.items()[0].attempts == 8 and "HTTP 503" in (outbox.items()[0].last_error or "")
    receiver.status = 200
    assert len(outbox.deliver_due().delivered) == 1
    assert len(receiver.requests) == 1 and outbox.counts_by_state().get("pending", 0) == 0


def test_dead_after_max_attempts_then_retry_dead(tmp_path: Path, receiver: HttpReceiver) -> None:
    clock = Clock()
    outbox = make_outbox(tmp_path, receiver, clock, max_attempts=3)
    outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "oncall", "a1", payload(tmp_path)))
    for _ in range(3):
        outbox.deliver_due()
        clock.now += 1000
    assert outbox.counts_by_state() == {"dead": 1}
    dead = outbox.dead_letters()
    assert dead[0].attempts == 3 and "503" in (dead[0].last_error or "")
    clock.now += 10_000
    assert outbox.deliver_due().attempted == 0  # dead items are not retried on their own

    receiver.status = 200
    assert outbox.retry_dead() == 1
    assert len(outbox.deliver_due().delivered) == 1
    assert outbox.counts_by_state() == {"delivered": 1} and len(receiver.requests) == 1


def test_permanent_error_is_dead_at_once_and_retry_dead_by_id(tmp_path: Path, receiver: HttpReceiver) -> None:
    clock = Clock()
    receiver.status = 400
    outbox = make_outbox(tmp_path, receiver, clock)
    outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "oncall", "a1", payload(tmp_path, "a1.json")))
    outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "oncall", "a2", payload(tmp_path, "a2.json")))
    outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "nowhere", "a3", payload(tmp_path, "a3.json")))  # unknown target
    outbox.enqueue(DeliveryRequest(Channel.HL7, "ehr", "a4", payload(tmp_path, "a4.json")))  # no HL7 channel
    missing = tmp_path / "gone.json"
    outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "oncall", "a5", missing))  # file vanished
    result = outbox.deliver_due()
    assert len(result.dead) == 5 and result.attempted == 5
    reasons = {item.item_key: item.last_error or "" for item in outbox.dead_letters()}
    assert "HTTP 400" in reasons["a1"] and "nowhere" in reasons["a3"]
    assert "no channel 'hl7'" in reasons["a4"] and "missing" in reasons["a5"]

    receiver.status = 200
    first = outbox.dead_letters()[0].id
    assert outbox.retry_dead([first]) == 1
    assert outbox.deliver_due().delivered == [first]
    assert outbox.counts_by_state() == {"delivered": 1, "dead": 4}


def test_retryable_client_errors_and_unreachable_peer(tmp_path: Path, receiver: HttpReceiver) -> None:
    clock = Clock()
    receiver.status = 429
    outbox = make_outbox(tmp_path, receiver, clock)
    outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "oncall", "a1", payload(tmp_path)))
    assert len(outbox.deliver_due().retrying) == 1
    receiver.stop()  # peer gone: connection refused is retried, not dead
    clock.now += 1000
    assert len(outbox.deliver_due().retrying) == 1
    assert "unreachable" in (outbox.items()[0].last_error or "")


def test_limit_bounds_one_pass(tmp_path: Path, receiver: HttpReceiver) -> None:
    receiver.status = 200
    outbox = make_outbox(tmp_path, receiver, Clock())
    for index in range(5):
        outbox.enqueue(DeliveryRequest(Channel.WEBHOOK, "oncall", f"a{index}", payload(tmp_path, f"{index}.json")))
    assert outbox.deliver_due(limit=2).attempted == 2
    assert outbox.counts_by_state()["pending"] == 3


def test_a_claimed_delivery_waits_for_its_lease_unless_its_own_node_restarted(tmp_path: Path) -> None:
    """Two nodes on one database never send an item at the same time; a node that died
    mid-pass leaves its items to the others after the lease, or to itself at once."""
    db = open_database(tmp_path / "state.sqlite3")
    with db.transaction() as repos:
        repos.outbox.enqueue(DeliveryRequest(Channel.DICOM, "pacs", "1.2.3", tmp_path / "sr.dcm"), 100.0)
        (claimed,) = repos.outbox.claim_due(100.0, "node-a", 300.0)  # node-a dies before recording
        assert repos.outbox.claim_due(150.0, "node-b", 300.0) == []  # node-a's lease holds
    with db.transaction() as repos:
        (again,) = repos.outbox.claim_due(160.0, "node-a", 300.0)  # node-a restarted: its own claim
        assert again.id == claimed.id
    with db.transaction() as repos:
        (taken,) = repos.outbox.claim_due(461.0, "node-b", 300.0)  # node-a's lease ran out
        repos.outbox.mark_delivered(taken.id, 462.0)
        assert repos.outbox.claim_due(1000.0, "node-a", 300.0) == []  # delivered: nobody sends it again
