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
from tests.support.peers import Orthanc, closed_port, start_orthanc
from tests.support.required_tools import in_ci


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (CI=true) a skipped test is a failed one: a missing tool or data folder is an
    install step to add, not a reason to pass without running."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc PACS on free loopback ports, stopped after the test."""
    pacs = start_orthanc(tmp_path / "orthanc")
    yield pacs
    pacs.stop()


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test (a peer that is down)."""
    with closed_port() as port:
        yield port


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
