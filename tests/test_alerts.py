"""Alerts end to end through the outbox: a real aiosmtpd server and a real ``http.server``
webhook on free loopback ports receive them.

The study results are built directly from the typed dataclasses (synthetic values, no
patient data); what is checked is the rule, the content and sent-once behaviour.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.config import AlertSettings, EmailSettings, OutboxSettings, WebhookTarget
from daemon.deliver.email_sender import EmailChannel
from daemon.deliver.outbox import Outbox
from daemon.deliver.webhook_sender import WebhookChannel
from daemon.dispatch.alert_queue import queue_alert
from daemon.report.alert_files import prepare_alert
from daemon.report.alert_message import NOT_VALIDATED_NOTICE, build_alert_payload, email_body
from daemon.report.alert_rules import (
    REASON_EXPANSION_RISK,
    REASON_VOLUME,
    AlertDecision,
    decide_alert,
)
from domain.analysis import StudyAnalysis
from domain.brain_score import BrainScore
from domain.clinical import ClinicalVariables
from domain.delivery import DeliveryState
from domain.measurements import HematomaMeasurements
from domain.prediction import ExpansionPrediction, prediction_unavailable_reason
from domain.study import StudyIdentity
from tests.support.alert_peers import HttpReceiver, SmtpReceiver
from tests.support.databases import open_database
from tests.support.peers import free_port

PATIENT_ID = "PID-778899"
PATIENT_NAME = "Doe^Jane"
TOKEN = "tok-9f8e7d-secret"


def analysis(volume_ml: float = 42.0, prediction: ExpansionPrediction | None = None,
             risk: str = "unavailable", completion: str = "PARTIAL") -> StudyAnalysis:
    identity = StudyIdentity(study_uid="1.2.826.0.1.3680043.10.1341.99.1", handle="st-0123456789",
                             patient_id=PATIENT_ID, issuer_of_patient_id="HOSP-A",
                             accession_number="ACC-5544", patient_name=PATIENT_NAME,
                             study_datetime="20261122093000")
    measurements = HematomaMeasurements(volume_ml=volume_ml, abc2_ml=volume_ml * 1.1,
                                        diameters_mm=(50.0, 40.0, 42.0), voxel_count=12345,
                                        intraventricular_extension=False,
                                        method_name="hemex-threshold", method_version="1.0.0")
    return StudyAnalysis(identity=identity, series_uid="1.2.3.4", measurements=measurements,
                         clinical=ClinicalVariables(), prediction=prediction,
                         brain_score=BrainScore(points=7, published_risk=0.262, components={}, missing=()),
                         completion=completion, risk_category=risk,  # type: ignore[arg-type]
                         software_version="0.1.0")


def prediction(probability: float, validated: bool) -> ExpansionPrediction:
    return ExpansionPrediction(probability=probability, model_name="multimodal-cnn-model2",
                               model_version="0.3.0", weights_origin="test weights",
                               clinically_validated=validated, variables_used=("pt_inr",),
                               variables_missing=(), image_only_fallback=False,
                               outside_published_domain=("matrix 256 x 256, below the published 512",))


class Node:
    """The alert pieces wired as the daemon wires them."""

    def __init__(self, tmp_path: Path, smtp_port: int, webhook_url: str, min_volume_ml: float = 30.0) -> None:
        self.now = 1_000_000.0
        token_file = tmp_path / "webhook.token"
        token_file.write_text(TOKEN + "\n")
        self.settings = AlertSettings(
            min_volume_ml=min_volume_ml, include_identifiers="all",
            webhooks=[WebhookTarget(name="oncall", url=webhook_url, token_file=token_file, timeout_s=5.0)],
            email=EmailSettings(enabled=True, smtp_host="127.0.0.1", smtp_port=smtp_port, timeout_s=5.0,
                                sender="hemex@test.invalid", recipients=["stroke-oncall@test.invalid"]))
        self.db = open_database(tmp_path / "state.sqlite3")
        self.results = tmp_path / "results"
        self.outbox = Outbox(self.db, OutboxSettings(), {"webhook": WebhookChannel(self.settings.webhooks),
                                                          "email": EmailChannel(self.settings.email)},
                             clock=lambda: self.now)

    def queue(self, study: StudyAnalysis) -> bool:
        """Report stage (files) then dispatch (rows), as the node runs them."""
        uid = study.identity.study_uid

        def raised(key: str) -> bool:
            with self.db.reading() as repos:
                return repos.alerts.raised(uid, key)

        alert = prepare_alert(study, self.settings, self.results, raised)
        if alert is None:
            return False
        with self.db.transaction() as repos:
            return queue_alert(repos, uid, alert, self.settings.webhooks, self.now)


def test_alert_reaches_webhook_and_email_with_what_staff_need(tmp_path: Path, smtp: SmtpReceiver,
                                                              webhook: HttpReceiver,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    node = Node(tmp_path, smtp.port, webhook.url)
    study = analysis(42.0, prediction(0.81, validated=False), risk="not_validated")
    assert node.queue(study)
    result = node.outbox.deliver_due()
    assert len(result.delivered) == 2 and not result.dead

    request = webhook.requests[0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(request.body)
    assert body["study"] == {"handle": "st-0123456789", "identifiers": "all",
                             "study_instance_uid": study.identity.study_uid,
                             "patient_id": PATIENT_ID, "issuer_of_patient_id": "HOSP-A",
                             "accession_number": "ACC-5544", "study_date": "2026-11-22T09:30:00"}
    assert body["hematoma"]["volume_ml"] == 42.0 and body["hematoma"]["abc2_ml"] == pytest.approx(46.2)
    assert body["hematoma"]["method"] == {"name": "hemex-threshold", "version": "1.0.0"}
    assert body["expansion"]["model"] == {"name": "multimodal-cnn-model2", "version": "0.3.0"}
    assert body["expansion"]["not_clinically_validated"] is True
    assert body["expansion"]["notice"] == NOT_VALIDATED_NOTICE
    assert body["expansion"]["outside_published_domain"] == ["matrix 256 x 256, below the published 512"]
    assert body["brain_score"]["points"] == 7
    assert body["report"]["status"] == "preliminary"
    assert body["reasons"] == [REASON_VOLUME]
    assert PATIENT_NAME not in request.body.decode() and "http" not in request.body.decode()

    message = smtp.messages[0]
    subject = str(message["Subject"])
    assert "42.0 mL" in subject and "preliminary" in subject
    assert PATIENT_NAME not in subject and "Doe" not in subject and PATIENT_ID not in subject
    text = message.get_payload(decode=True).decode()
    for needed in (PATIENT_ID, "HOSP-A", "ACC-5544", "2026-11-22", "hemex-threshold 1.0.0", "ABC/2",
                   "NOT CLINICALLY VALIDATED", "BRAIN score",
                   "Outside the published domain: matrix 256 x 256, below the published 512"):
        assert needed in text
    assert "Doe" not in text
    assert message["To"] == "stroke-oncall@test.invalid"
    # Neither the token nor PHI reaches the node's log (the SMTP peer's own debug log is not ours).
    node_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("daemon"))
    assert "alert queued" in node_log and "email sent" in node_log
    assert TOKEN not in node_log and PATIENT_ID not in node_log and "Doe" not in node_log
    assert (tmp_path / "results" / "alerts" / "st-0123456789").is_dir()


def test_sent_once_per_study(tmp_path: Path, smtp: SmtpReceiver, webhook: HttpReceiver) -> None:
    node = Node(tmp_path, smtp.port, webhook.url)
    assert node.queue(analysis(42.0))
    node.outbox.deliver_due()
    assert not node.queue(analysis(45.0, completion="COMPLETE"))  # same category: no re-alert
    restarted = Node(tmp_path, smtp.port, webhook.url)  # same database after a restart
    assert not restarted.queue(analysis(42.0))
    restarted.outbox.deliver_due()
    assert len(webhook.requests) == 1 and len(smtp.messages) == 1


def test_realert_only_when_risk_category_changes(tmp_path: Path, smtp: SmtpReceiver, webhook: HttpReceiver) -> None:
    node = Node(tmp_path, smtp.port, webhook.url)
    assert node.queue(analysis(42.0))  # preliminary, no prediction yet
    # Final with an unvalidated prediction: still no category staff may act on.
    assert not node.queue(analysis(42.0, prediction(0.9, validated=False), "not_validated", "COMPLETE"))
    # Final with a validated high-risk prediction: the category changed, alert again.
    high = analysis(42.0, prediction(0.9, validated=True), "high", "COMPLETE")
    assert node.queue(high)
    assert not node.queue(high)
    node.outbox.deliver_due()
    assert len(webhook.requests) == 2 and len(smtp.messages) == 2
    second = json.loads(webhook.requests[1].body)
    assert second["reasons"] == [REASON_VOLUME, REASON_EXPANSION_RISK]
    assert second["expansion"]["not_clinically_validated"] is False and "notice" not in second["expansion"]
    assert second["report"]["status"] == "final"


def test_below_threshold_no_alert(tmp_path: Path, smtp: SmtpReceiver, webhook: HttpReceiver) -> None:
    node = Node(tmp_path, smtp.port, webhook.url)
    assert not node.queue(analysis(12.0, prediction(0.2, validated=True), "low"))
    assert node.outbox.counts_by_state() == {}
    with node.db.reading() as repos:
        assert repos.alerts.keys_of(analysis().identity.study_uid) == []
    assert not (tmp_path / "results" / "alerts").exists()


def test_alert_without_a_prediction_says_why() -> None:
    no_model = build_alert_payload(analysis(42.0), AlertDecision("k", (REASON_VOLUME,), "unknown"))
    assert no_model["expansion"] is None
    assert no_model["expansion_unavailable"] == "no validated expansion model configured"
    assert "not available (no validated expansion model configured)" in email_body(no_model)
    reason = prediction_unavailable_reason(True, ("pt_inr",))
    not_run = build_alert_payload(replace(analysis(42.0), prediction_unavailable=reason),
                                  AlertDecision("k", (REASON_VOLUME,), "unknown"))
    assert not_run["expansion_unavailable"] == reason and "pt_inr" in email_body(not_run)


def test_unvalidated_prediction_never_triggers_a_risk_alert() -> None:
    settings = AlertSettings(min_volume_ml=30.0)
    # A category of "high" with unvalidated weights (should never happen) is still ignored.
    assert decide_alert(analysis(5.0, prediction(0.99, validated=False), "high"), settings) is None
    assert decide_alert(analysis(5.0, prediction(0.99, validated=False), "not_validated"), settings) is None
    decision = decide_alert(analysis(5.0, prediction(0.99, validated=True), "high"), settings)
    assert decision is not None and decision.reasons == (REASON_EXPANSION_RISK,)
    assert decision.key == "ich-alert:risk=high"
    off = AlertSettings(min_volume_ml=30.0, on_high_expansion_risk=False)
    assert decide_alert(analysis(5.0, prediction(0.99, validated=True), "high"), off) is None


def test_smtp_down_is_retried_and_delivered_when_back(tmp_path: Path, webhook: HttpReceiver) -> None:
    port = free_port()
    node = Node(tmp_path, port, webhook.url)
    node.queue(analysis(42.0))
    result = node.outbox.deliver_due()
    assert len(result.delivered) == 1 and len(result.retrying) == 1  # webhook ok, SMTP down
    email_item = next(i for i in node.outbox.items() if i.channel == "email")
    assert email_item.state is DeliveryState.PENDING and "unreachable" in (email_item.last_error or "")

    from aiosmtpd.controller import Controller

    from tests.support.alert_peers import _Collect

    messages: list = []
    controller = Controller(_Collect(messages), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        node.now = email_item.next_attempt_at  # its retry time has come
        assert len(node.outbox.deliver_due().delivered) == 1
        assert len(messages) == 1 and len(webhook.requests) == 1
    finally:
        controller.stop()


def test_smtp_permanent_refusal_is_a_dead_letter(tmp_path: Path, webhook: HttpReceiver) -> None:
    from aiosmtpd.controller import Controller

    class Refuse:
        async def handle_RCPT(self, server, session, envelope, address, options):
            return "550 5.1.1 mailbox unknown"

    port = free_port()  # aiosmtpd cannot take port 0 (it connects to its port to start)
    controller = Controller(Refuse(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        node = Node(tmp_path, port, webhook.url)
        node.queue(analysis(42.0))
        node.outbox.deliver_due()
        dead = node.outbox.dead_letters()
        assert [item.channel for item in dead] == ["email"] and "550" in (dead[0].last_error or "")
    finally:
        controller.stop()
