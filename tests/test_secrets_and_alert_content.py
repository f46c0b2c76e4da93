"""Secrets out of config errors and logs; alert content minimal by default; a warning at
start-up for every secret or patient identifier that would cross the network in clear.

Real peers: an aiosmtpd server and an HTTP server on loopback receive the alerts. The
study is made of typed records with a made-up patient.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import AlertSettings, EmailSettings, OutboxSettings, WebhookTarget, load_settings
from daemon.deliver.email_sender import EmailChannel
from daemon.deliver.outbox import Outbox
from daemon.deliver.webhook_sender import WebhookChannel
from daemon.dispatch.alert_queue import queue_alert
from daemon.ops.channel_security import plaintext_warnings
from daemon.report.alert_files import prepare_alert
from daemon.state.database import Database
from domain.measurements import HematomaMeasurements
from tests.support.alert_peers import HttpReceiver, SmtpReceiver

SECRET = "pw-5e1f-never-print"
PATIENT_ID, ACCESSION, PATIENT_NAME = "PID-31337", "ACC-4242", "Roe^Richard"


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n' + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("body", [
    f'[alerts.email]\npasword = "{SECRET}"\n',                      # a mistyped key
    f'[alerts.email]\npassword = ["{SECRET}"]\n',                   # a password of the wrong type
    f'[[alerts.webhooks]]\nname = "oncall"\nurl = "https://x.invalid/h"\ntoken = {{ value = "{SECRET}" }}\n',
    f'[alerts]\nsmtp_password = "{SECRET}"\n',                     # a key in the wrong table
    f'HEMEX_ALERTS__EMAIL__PASWORD={SECRET}',                       # a mistyped environment variable
], ids=["mistyped-key", "wrong-typed-password", "wrong-typed-token", "key-in-the-wrong-table", "mistyped-env"])
def test_a_configuration_error_never_prints_the_value(tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes saw ``input_value='<the password>'`` in the error of a mistyped key."""
    if body.startswith("HEMEX_"):
        name, value = body.split("=", 1)
        monkeypatch.setenv(name, value)
        body = ""
    assert main(["check-config", "--config", str(_write(tmp_path, body))]) == 2
    captured = capsys.readouterr()
    assert "invalid configuration" in captured.err
    assert SECRET not in captured.err and SECRET not in captured.out


def test_a_webhook_url_with_credentials_is_masked_in_check_config(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"https://pager:{SECRET}@paging.example.org/hooks/ich?key={SECRET}q&team=stroke"
    body = f'[[alerts.webhooks]]\nname = "oncall"\nurl = "{url}"\n'
    assert main(["check-config", "--config", str(_write(tmp_path, body))]) == 0
    out = capsys.readouterr().out
    assert "paging.example.org/hooks/ich" in out and "team=" in out
    assert SECRET not in out
    # the node itself still posts to the real URL
    assert load_settings(_write(tmp_path, body)).alerts.webhooks[0].url == url


def _study():  # type: ignore[no-untyped-def]
    from domain.analysis import StudyAnalysis
    from domain.clinical import ClinicalVariables
    from domain.study import StudyIdentity

    identity = StudyIdentity(study_uid="1.2.826.0.1.3680043.10.1341.77.1", handle="st-77aa",
                             patient_id=PATIENT_ID, issuer_of_patient_id="HOSP-A", accession_number=ACCESSION,
                             patient_name=PATIENT_NAME, study_datetime="20261122093000")
    measurements = HematomaMeasurements(volume_ml=41.0, abc2_ml=44.0, diameters_mm=(50.0, 40.0, 41.0),
                                        voxel_count=9999, intraventricular_extension=False,
                                        method_name="hemex-threshold", method_version="1.0.0")
    return StudyAnalysis(identity=identity, series_uid="1.2.3.4", measurements=measurements,
                         clinical=ClinicalVariables(), prediction=None, brain_score=None, completion="PARTIAL",
                         risk_category="unavailable", software_version="0.1.0")


def _send_alert(tmp_path: Path, settings: AlertSettings) -> None:
    db = Database(tmp_path / "state.sqlite3")
    outbox = Outbox(db, OutboxSettings(), {"webhook": WebhookChannel(settings.webhooks),
                                           "email": EmailChannel(settings.email)})
    study = _study()
    alert = prepare_alert(study, settings, tmp_path / "results", lambda _key: False)
    assert alert is not None
    with db.transaction() as repos:
        queue_alert(repos, study.identity.study_uid, alert, settings.webhooks, 0.0)
    assert len(outbox.deliver_due().delivered) == 2
    db.close()


def _alert_settings(smtp: SmtpReceiver, webhook: HttpReceiver, **extra: object) -> AlertSettings:
    return AlertSettings(min_volume_ml=30.0, webhooks=[WebhookTarget(name="oncall", url=webhook.url)],
                         email=EmailSettings(enabled=True, smtp_host="127.0.0.1", smtp_port=smtp.port,
                                             recipients=["oncall@test.invalid"]), **extra)  # type: ignore[arg-type]


def test_alerts_carry_no_patient_identifier_by_default(tmp_path: Path, smtp: SmtpReceiver,
                                                       webhook: HttpReceiver) -> None:
    """The probes saw patient ID and accession go out over plain HTTP and SMTP."""
    _send_alert(tmp_path, _alert_settings(smtp, webhook))
    body = webhook.requests[0].body.decode()
    mail = smtp.messages[0].as_string()
    for text in (body, mail):
        assert "st-77aa" in text and "41.0" in text  # the handle and the volume are there
        for identifier in (PATIENT_ID, ACCESSION, "HOSP-A", "1.2.826.0.1.3680043.10.1341.77.1", "Roe"):
            assert identifier not in text
    assert json.loads(body)["study"]["identifiers"] == "none"


@pytest.mark.parametrize("level, present, absent", [
    ("accession", (ACCESSION,), (PATIENT_ID, "Roe")),
    ("all", (ACCESSION, PATIENT_ID, "HOSP-A"), ("Roe",)),
])
def test_alert_identifiers_are_what_the_setting_says(tmp_path: Path, smtp: SmtpReceiver, webhook: HttpReceiver,
                                                     level: str, present: tuple[str, ...],
                                                     absent: tuple[str, ...]) -> None:
    _send_alert(tmp_path, _alert_settings(smtp, webhook, include_identifiers=level))
    for text in (webhook.requests[0].body.decode(), smtp.messages[0].as_string()):
        assert all(value in text for value in present)
        assert not any(value in text for value in absent)


def test_start_up_warns_for_each_secret_or_identifier_sent_in_clear(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data", alerts={
        "include_identifiers": "all",
        "webhooks": [{"name": "plain", "url": f"http://pager:{SECRET}@10.1.2.3/hook", "token": SECRET},
                     {"name": "secure", "url": "https://10.1.2.3/hook", "token": SECRET}],
        "email": {"enabled": True, "smtp_host": "mail.example.org", "username": "hemex", "password": SECRET,
                  "recipients": ["oncall@example.org"]},
        "contacts": [{"name": "neuro", "webhook_url": "http://10.1.2.4/page", "webhook_token": SECRET}],
        "roster": [{"contacts": ["neuro"]}],
        "acknowledgement": {"public_url": "http://hemex.example.org:9464"}},
        hl7={"host": "0.0.0.0", "outbound_host": "ehr.example.org"})
    warnings = plaintext_warnings(settings)
    text = "\n".join(warnings)
    assert SECRET not in text
    for setting in ("alerts.webhooks[plain]", "alerts.email", "hl7.tls_cert", "hl7.outbound_tls_ca",
                    "dicom.tls_cert", "alerts.contacts[neuro].webhook_url", "alerts.acknowledgement.public_url"):
        assert setting in text, setting
    assert "alerts.webhooks[secure]" not in text
    quiet = load_settings(None, data_dir=tmp_path / "data", dicom={"host": "127.0.0.1"},
                          hl7={"host": "127.0.0.1"}, alerts={"webhooks": [{"name": "p", "url": "http://10.1.2.3/h"}]})
    assert plaintext_warnings(quiet) == []  # no token, no identifiers, loopback listeners
    # The running node logs them (listeners on loopback here: only the webhook warns).
    running = load_settings(None, data_dir=tmp_path / "node", dicom={"host": "127.0.0.1", "port": 0},
                            hl7={"host": "127.0.0.1", "port": 0}, metrics={"port": 0},
                            alerts={"webhooks": [{"name": "plain", "url": "http://10.1.2.3/hook", "token": SECRET}]})
    from daemon.app import Node

    with caplog.at_level(logging.WARNING):
        node = Node(running)
        node.start()
        node.stop()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("alerts.webhooks[plain]" in line and "bearer token" in line for line in logged)
    assert not any(SECRET in line for line in logged)


def test_the_not_analysed_and_follow_up_alerts_follow_the_same_setting() -> None:
    """Every kind of alert builds its study block in one place (alert_message.study_identifiers)."""
    from datetime import datetime, timedelta

    from daemon.report.followup_alert import build_followup_payload, email_text
    from daemon.report.notice_alert import notice_email, notice_payload
    from domain.followup import FollowupRules, Role, VolumeReading, observe_change
    from domain.notice import NotAnalysedNotice
    from domain.outcomes import ObservedOutcome
    from domain.study import StudyState

    identity = _study().identity
    notice = NotAnalysedNotice(identity, StudyState.NO_SERIES, "no axial series", (), "0.1.0")
    at = datetime(2026, 11, 22, 9, 30)
    change = observe_change(VolumeReading(10.0, "m", "1", at), VolumeReading(20.0, "m", "1", at + timedelta(hours=8)),
                            FollowupRules())
    outcome = ObservedOutcome("1.2.826.0.1.3680043.10.1341.77.0", "st-base", identity.study_uid, identity.handle,
                              at, at + timedelta(hours=8), Role.FOLLOWUP, change, "m", "1", "m", "1", None, None,
                              "0.1.0")
    texts = {
        "notice": json.dumps(notice_payload(notice)) + notice_email(notice_payload(notice), notice).decode(),
        "followup": json.dumps(build_followup_payload(identity, outcome, "0.1.0"))
        + "".join(email_text(build_followup_payload(identity, outcome, "0.1.0"))),
    }
    for kind, text in texts.items():
        assert identity.handle in text, kind
        for identifier in (PATIENT_ID, ACCESSION, "HOSP-A", identity.study_uid, "1.2.826.0.1.3680043.10.1341.77.0",
                           "2026-11-22"):
            assert identifier not in text, (kind, identifier)
    everything = json.dumps(build_followup_payload(identity, outcome, "0.1.0", identifiers="all"))
    assert PATIENT_ID in everything and "1.2.826.0.1.3680043.10.1341.77.0" in everything
    assert PATIENT_ID in json.dumps(notice_payload(notice, identifiers="all"))
