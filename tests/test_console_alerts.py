"""Acknowledging an alert from the console stops its escalation: over real HTTP (the
node's web server and the console's login, CSRF and roles), against alerts that went
through the real lifecycle of tests/test_alert_lifecycle.py (report files, dispatch,
the outbox to a real HTTP receiver and a real SMTP server, the escalation job), all on
one injected clock so that escalation is a matter of turning it, not of waiting.

tests/test_console_browser.py shows the same in a real browser on a running node; this
module checks what a browser cannot wait for: that no escalation follows the button.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.audit_log import AuditLog
from daemon.config import ConsoleSettings
from daemon.console.accounts import AccountsFile
from daemon.console.blueprint import ConsoleDependencies, console_blueprint
from daemon.web.app_factory import build_web_app
from daemon.web.server import WebServer
from domain.alerts import AlertStep
from domain.handles import study_handle
from tests.support.alert_peers import HttpReceiver, SmtpReceiver
from tests.test_alert_lifecycle import ESCALATE_AFTER_S, Loop
from tests.test_console_access import ADMIN, VIEWER, Browserless

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.10.1341.78.1"


@pytest.fixture
def peers() -> Iterator[tuple[HttpReceiver, HttpReceiver, SmtpReceiver]]:
    broadcast, first, smtp = HttpReceiver.start(), HttpReceiver.start(), SmtpReceiver.start()
    yield broadcast, first, smtp
    broadcast.stop()
    first.stop()
    smtp.stop()


@contextmanager
def _console(loop: Loop) -> Iterator[tuple[Browserless, AuditLog]]:
    """The console on a free loopback port, reading ``loop``'s database on its clock,
    with an administrator and a viewer account; yields a client and the audit log."""
    settings = loop.settings.model_copy(update={"console": ConsoleSettings(auth="accounts")})
    accounts = AccountsFile(settings.console_accounts_path)
    accounts.set(ADMIN[0], "admin", ADMIN[1])
    accounts.set(VIEWER[0], "viewer", VIEWER[1])
    audit = AuditLog(settings.log_dir)
    deps = ConsoleDependencies(settings=settings, db=loop.db, audit=audit, accounts=accounts,
                               deliver_now=lambda: None, clock=lambda: loop.now)
    server = WebServer("127.0.0.1", 0, build_web_app([console_blueprint(deps)], b"k" * 32))
    server.start()
    try:
        yield Browserless(server.port), audit
    finally:
        server.stop()
        audit.close()


def _audit(audit: AuditLog, action: str) -> list[dict[str, object]]:
    return [r for r in map(json.loads, audit.path.read_text().splitlines()) if r["action"] == action]


def _flash(body: str) -> str:
    found = re.search(r'<div class="flash" role="status">([^<]*)</div>', body)
    assert found, "no flash message"
    return found.group(1).replace("&#39;", "'")


def test_a_viewer_acknowledges_an_escalated_alert_and_no_escalation_follows(
        tmp_path: Path, peers: tuple[HttpReceiver, HttpReceiver, SmtpReceiver]) -> None:
    broadcast, first, smtp = peers
    loop = Loop(tmp_path, broadcast, first, smtp)
    code = loop.raise_alert(STUDY)
    loop.later(1.0)
    loop.later(ESCALATE_AFTER_S + 1)  # nobody answered: the consultant, second on the roster, is mailed
    assert len(smtp.messages) == 1 and loop.group(code).level == 1
    handle = study_handle(STUDY)
    with _console(loop) as (client, audit):
        assert client.login(*VIEWER).status == 302
        page = client.get("/alerts").body
        card = page[page.index(f'id="alert-{code}"'):]
        for shown in ("not acknowledged", "escalated 1 time(s): now with on-call contact 2", "step-escalated",
                      "consultant", "fellow", f'id="ack-{code}"'):
            assert shown in card, shown
        assert "not that a person read it" in page
        study_page = client.get(f"/studies/{handle}").body
        assert f'id="ack-{code}"' in study_page  # the study page offers the same button

        refused = client.post(f"/alerts/{code}/acknowledge", {"next": f"/studies/{handle}"})
        assert refused.status == 400 and loop.group(code).open  # no CSRF token, no acknowledgement
        token = client.csrf_token(f"/studies/{handle}")
        answer = client.post(f"/alerts/{code}/acknowledge", {"csrf_token": token, "next": f"/studies/{handle}"})
        assert answer.status == 302 and answer.headers["Location"] == f"/studies/{handle}"
        back = client.get(f"/studies/{handle}").body
        assert _flash(back) == f"Alert {code} acknowledged by oncall: it will not escalate further."
        assert f'id="ack-{code}"' not in back and "by <strong>oncall (console)</strong>" in back

        # Pressed again from a page opened before (another tab): said so, nothing changes.
        again = client.post(f"/alerts/{code}/acknowledge", {"csrf_token": token, "next": "//elsewhere.example/"})
        assert again.status == 302 and again.headers["Location"] == "/alerts"  # only within the console
        assert "already acknowledged (oncall (console)" in _flash(client.get("/alerts").body)
        unknown = client.post("/alerts/AAAA-AAAA/acknowledge", {"csrf_token": token})
        assert unknown.status == 404

        records = _audit(audit, "console-alert-acknowledged")
        assert [(r["user"], r["code"], r["changed"]) for r in records] == [(VIEWER[0], code, True),
                                                                         (VIEWER[0], code, False)]
        assert records[0]["studies"] == [handle]

    group = loop.group(code)
    assert not group.open and group.acknowledged_by == "oncall (console)" and group.acknowledged_at == loop.now
    loop.later(ESCALATE_AFTER_S + 1)  # the escalation that was due finds it acknowledged
    loop.later(ESCALATE_AFTER_S + 1)
    after = loop.group(code)
    assert len(smtp.messages) == 1 and after.level == 1
    assert [e.step for e in after.events].count(AlertStep.ESCALATED) == 1
    assert AlertStep.EXHAUSTED not in [e.step for e in after.events]


def test_the_administrator_may_acknowledge_too(tmp_path: Path,
                                               peers: tuple[HttpReceiver, HttpReceiver, SmtpReceiver]) -> None:
    loop = Loop(tmp_path, *peers)
    code = loop.raise_alert(STUDY)
    loop.later(1.0)
    with _console(loop) as (client, _):
        client.login(*ADMIN)
        token = client.csrf_token("/alerts")
        assert client.post(f"/alerts/{code}/acknowledge", {"csrf_token": token}).status == 302
    assert loop.group(code).acknowledged_by == "dr.admin (console)"
