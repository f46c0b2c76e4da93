"""Shared fixtures: real peers on loopback, fresh data directories."""

from __future__ import annotations

import logging
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
from tests.support.databases import on_postgresql
from tests.support.peers import Orthanc, closed_port, start_orthanc
from tests.support.postgres import PASSWORD as POSTGRES_PASSWORD
from tests.support.postgres import PostgresServer
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: about the SQLite file itself; not run on PostgreSQL")
    config.addinivalue_line("markers", "no_database: opens no node database; not run again on PostgreSQL")
    config.addinivalue_line("markers", "database_neutral: checks image analysis, report content or socket guards; "
                            "its database use is that of the end-to-end tests; not run again on PostgreSQL")


NOT_ON_POSTGRESQL = ("sqlite_only", "no_database", "database_neutral")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass, tests about the SQLite file, tests that open no database and
    tests whose subject is not the database (their database use is the end-to-end tests',
    which do run again) are deselected: they ran in the SQLite pass, and would check the
    same again."""
    if on_postgresql():
        kept = [item for item in items if not any(item.get_closest_marker(name) for name in NOT_ON_POSTGRESQL)]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (Debian's packages, a temporary folder)."""
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _node_database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the PostgreSQL pass, every test gets a database of its own, and the node's
    settings (HEMEX_DATABASE__URL, __PASSWORD) point there, in this process and in the
    node processes tests start."""
    if not on_postgresql():
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    monkeypatch.setenv("HEMEX_DATABASE__URL", server.create_database())
    monkeypatch.setenv("HEMEX_DATABASE__PASSWORD", POSTGRES_PASSWORD)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were: for tests that set up the
    node's logging (daemon.logging_setup) in the test process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


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
