"""Shared fixtures: real peers on loopback, fresh data directories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Nodes started by tests serve metrics on a free port, not on the default 9464 that a
# node running on the developer's machine (or another test) may hold.
os.environ.setdefault("HEMEX_METRICS__PORT", "0")

from tests.support.alert_peers import HttpReceiver, SmtpReceiver
from tests.support.peers import Orthanc, start_orthanc

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc PACS on free loopback ports, stopped after the test."""
    pacs = start_orthanc(tmp_path / "orthanc")
    yield pacs
    pacs.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    """A real SMTP server (aiosmtpd) on a free loopback port, recording messages."""
    receiver = SmtpReceiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook() -> Iterator[HttpReceiver]:
    """A real HTTP server on a free loopback port, recording POSTed alerts."""
    receiver = HttpReceiver.start()
    yield receiver
    receiver.stop()
