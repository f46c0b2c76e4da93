"""Alerts that close their loop, through the real outbox to real peers: a broadcast
webhook and the first on-call contact (HTTP servers) and the second contact (aiosmtpd).

An alert nobody acknowledges escalates to the next contact of the roster after
``escalate_after_s``, and stops when the roster has nobody left; a second alert for the
same patient joins the open one (one code, one chain); an acknowledgement by code ends
the chain; every step is stored with its time. The clock is injected, the alerts are
built from typed analyses (synthetic values, no patient data).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.alert_links import AlertLinks, normal_code
from daemon.config import Settings, load_settings
from daemon.deliver.channels import build_channels
from daemon.deliver.outbox import Outbox
from daemon.dispatch.alert_queue import alert_routing, queue_alert
from daemon.jobs.runner import JobRunner
from daemon.ops.alert_acknowledgement import acknowledge, acknowledge_code, show
from daemon.report.alert_escalation_job import AlertEscalationStage
from daemon.report.alert_files import prepare_alert
from daemon.report.alert_grouping import acknowledgement_for
from domain.alerts import AlertStep
from domain.handles import study_handle
from domain.jobs import JobKind
from domain.study import ReceivedInstance
from tests.support.alert_peers import HttpReceiver, SmtpReceiver
from tests.support.databases import open_database
from tests.test_alerts import analysis

ESCALATE_AFTER_S = 300.0


class Loop:
    """Report (alert files), dispatch (queue), outbox and the escalation job, one clock."""

    def __init__(self, tmp_path: Path, broadcast: HttpReceiver, first: HttpReceiver, smtp: SmtpReceiver) -> None:
        self.now = 1_800_000_000.0
        self.settings: Settings = load_settings(None, data_dir=tmp_path / "node", alerts={
            "min_volume_ml": 30.0,
            "webhooks": [{"name": "oncall", "url": broadcast.url}],
            "email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "timeout_s": 5.0,
                      "sender": "hemex@test.invalid", "recipients": []},
            "acknowledgement": {"public_url": "http://hemex.test.invalid:9464",
                                "escalate_after_s": ESCALATE_AFTER_S},
            "contacts": [{"name": "fellow", "webhook_url": first.url},
                         {"name": "consultant", "email": ["consultant@test.invalid"]}],
            "roster": [{"contacts": ["fellow", "consultant"]}]})
        self.db = open_database(self.settings.database_path)
        self.links = AlertLinks.from_settings(self.settings)
        self.outbox = Outbox(self.db, self.settings.outbox, build_channels(self.settings), clock=lambda: self.now)
        escalation = AlertEscalationStage(self.settings, self.db, clock=lambda: self.now)
        self.runner = JobRunner(self.db, {JobKind.ESCALATE_ALERT: escalation.escalate_alert},
                                clock=lambda: self.now)

    def raise_alert(self, study_uid: str, volume_ml: float = 42.0,
                    between: Callable[[], object] | None = None) -> str:
        """Report and dispatch an alert for a study of the test patient (``between`` runs
        between the two stages); returns its code."""
        study = analysis(volume_ml)
        identity = study.identity.__class__(**{**study.identity.__dict__, "study_uid": study_uid,
                                               "handle": study_handle(study_uid)})
        study = study.__class__(**{**study.__dict__, "identity": identity})
        with self.db.transaction() as repos:
            repos.images.record(ReceivedInstance(f"{study_uid}.1", "1.2.840.10008.5.1.4.1.1.2", study_uid,
                                                 f"{study_uid}.9", "CT", "", identity.patient_id,
                                                 identity.issuer_of_patient_id, None, None, None),
                                self.settings.spool_dir / "x.dcm", 1, "CT", self.now, self.now)
        alert = prepare_alert(study, self.settings.alerts, self.settings.results_dir, lambda key: False,
                              acknowledgement=lambda: acknowledgement_for(self.db, identity, self.links,
                                                          self.settings.alerts.acknowledgement, self.now))
        assert alert is not None and alert.acknowledgement is not None
        if between is not None:
            between()
        with self.db.transaction() as repos:
            assert queue_alert(repos, study_uid, alert, self.settings.alerts.webhooks, self.now,
                               **alert_routing(self.settings, self.now - 90.0, self.now))
        return alert.acknowledgement.short_code

    def group(self, code: str):  # type: ignore[no-untyped-def]
        with self.db.reading() as repos:
            return repos.alerts.group_by_code(code)

    def later(self, seconds: float) -> None:
        """Let ``seconds`` pass: due escalations run, due deliveries go out."""
        self.now += seconds
        self.runner.run_pending()
        self.outbox.deliver_due()


@pytest.fixture
def peers() -> tuple[HttpReceiver, HttpReceiver, SmtpReceiver]:
    broadcast, first, smtp = HttpReceiver.start(), HttpReceiver.start(), SmtpReceiver.start()
    yield broadcast, first, smtp  # type: ignore[misc]
    broadcast.stop()
    first.stop()
    smtp.stop()


def test_an_unacknowledged_alert_escalates_to_the_second_contact_then_stops(
        tmp_path: Path, peers: tuple[HttpReceiver, HttpReceiver, SmtpReceiver]) -> None:
    broadcast, first, smtp = peers
    loop = Loop(tmp_path, broadcast, first, smtp)
    code = loop.raise_alert("1.2.826.0.1.3680043.10.1341.77.1")
    loop.later(1.0)
    assert (len(broadcast.requests), len(first.requests), len(smtp.messages)) == (1, 1, 0)
    assert json.loads(first.requests[0].body)["acknowledgement"]["code"] == code

    loop.later(ESCALATE_AFTER_S - 10)  # not yet due
    assert len(smtp.messages) == 0
    loop.later(20)  # due: the consultant, second on the roster, gets the alert by e-mail
    assert (len(broadcast.requests), len(first.requests), len(smtp.messages)) == (1, 1, 1)
    message = smtp.messages[0]
    assert message["To"] == "consultant@test.invalid" and str(message["Subject"]).startswith("[ESCALATED]")
    body = message.get_payload(decode=True).decode()
    assert code in body and "not acknowledged" in body and "http://hemex.test.invalid:9464/alerts/ack/" in body

    loop.later(ESCALATE_AFTER_S + 1)  # nobody left on the roster: the chain ends, nothing is sent
    assert (len(broadcast.requests), len(first.requests), len(smtp.messages)) == (1, 1, 1)
    group = loop.group(code)
    steps = [e.step for e in group.events]
    assert steps.count(AlertStep.ESCALATED) == 1 and AlertStep.EXHAUSTED in steps and group.level == 1
    assert steps.index(AlertStep.QUEUED) < steps.index(AlertStep.SENT) < steps.index(AlertStep.ESCALATED)
    assert [e.detail for e in group.events if e.step is AlertStep.ESCALATED] == ["consultant"]
    loop.later(ESCALATE_AFTER_S + 1)
    assert [e.step for e in loop.group(code).events].count(AlertStep.EXHAUSTED) == 1  # said once


def test_a_second_alert_for_the_patient_joins_the_open_one_and_one_acknowledgement_ends_both(
        tmp_path: Path, peers: tuple[HttpReceiver, HttpReceiver, SmtpReceiver]) -> None:
    broadcast, first, smtp = peers
    loop = Loop(tmp_path, broadcast, first, smtp)
    code = loop.raise_alert("1.2.826.0.1.3680043.10.1341.77.2")
    loop.later(60)
    again = loop.raise_alert("1.2.826.0.1.3680043.10.1341.77.3", volume_ml=55.0)  # same patient, new study
    assert again == code
    loop.later(1)
    group = loop.group(code)
    assert len(group.studies) == 2 and AlertStep.MERGED in [e.step for e in group.events]
    assert len(first.requests) == 2  # the first contact got both (one chain)

    changed, acknowledged = acknowledge_code(loop.db, code.lower().replace("-", ""), "Dr Code", loop.now)
    assert changed and not acknowledged.open and acknowledged.acknowledged_by == "Dr Code (code)"
    assert normal_code(code.lower()) == code
    loop.later(ESCALATE_AFTER_S + 1)
    assert len(smtp.messages) == 0 and loop.group(code).level == 0  # acknowledged: no escalation

    # A later alert of the patient starts a new group: its own code, acknowledged anew.
    loop.later(60)
    other = loop.raise_alert("1.2.826.0.1.3680043.10.1341.77.4", volume_ml=60.0)
    assert other != code and loop.group(other).open and not loop.group(code).open
    # One whose files were made while the group was open, acknowledged before dispatch
    # recorded it, reopens that group: the same link acknowledges it again.
    token = loop.links.token(loop.group(other).ref)

    def acknowledged_meanwhile() -> None:
        loop.later(5)
        assert acknowledge(loop.db, loop.links, token, "Dr Early", loop.now).title.startswith("Acknowledged")
        assert not loop.group(other).open
        loop.later(5)

    reopened = loop.raise_alert("1.2.826.0.1.3680043.10.1341.77.6", volume_ml=61.0, between=acknowledged_meanwhile)
    assert reopened == other and loop.group(other).open
    assert show(loop.db, loop.links, token).form
    assert acknowledge(loop.db, loop.links, token, "Dr Link", loop.now).title.startswith("Acknowledged")
    assert not loop.group(other).open
    assert show(loop.db, loop.links, "not-a-token").status.startswith("404")


def test_sent_and_delivered_are_steps_per_recipient(tmp_path: Path,
                                                    peers: tuple[HttpReceiver, HttpReceiver, SmtpReceiver]) -> None:
    broadcast, first, smtp = peers
    broadcast.status = 503  # the broadcast pager is down for now
    loop = Loop(tmp_path, broadcast, first, smtp)
    code = loop.raise_alert("1.2.826.0.1.3680043.10.1341.77.5")
    loop.later(1)
    events = loop.group(code).events
    sent = [e for e in events if e.step is AlertStep.SENT]
    assert [e.detail for e in sent] == ["webhook contact:fellow"]  # the contact took it, the pager not
    broadcast.status = 200
    loop.later(60)
    events = loop.group(code).events
    assert {e.detail for e in events if e.step is AlertStep.SENT} == {"webhook contact:fellow", "webhook oncall"}
    assert len([e for e in events if e.step is AlertStep.DELIVERED]) == 2
