"""File permissions, secrets kept out of logs and check-config, PHI kept out of the log.

Synthetic tiny CT slices with a made-up patient; real listener on loopback, real files.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from daemon.audit_log import AuditLog
from daemon.cli import main
from daemon.config import LoggingSettings, load_settings
from daemon.logging_setup import configure_logging
from daemon.tls import server_context
from domain.durable_files import ensure_private_dir, write_atomically
from domain.errors import ConfigurationError
from domain.jobs import JobKind
from tests.support.databases import open_database
from tests.support.dicom_listener import send, start_receive_listener, tiny_ct
from tests.support.required_tools import required_tool

SMTP_SECRET = "smtp-pw-7f3a9c"
WEBHOOK_SECRET = "wh-token-51d2e8"
PATIENT_ID = "PHI-ID-99123"
PATIENT_NAME = "Doe^Jane"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.sqlite_only
def test_data_dir_database_and_spool_are_private(tmp_path: Path) -> None:
    data = ensure_private_dir(tmp_path / "a" / "data")
    assert _mode(data) == 0o700
    db = open_database(data / "hemex.sqlite3")
    with db.transaction() as repos:  # a write creates the WAL and shared-memory files
        repos.jobs.enqueue(JobKind.ANALYSE_STUDY, "probe", 0.0, 0.0)
    for name in ("hemex.sqlite3", "hemex.sqlite3-wal", "hemex.sqlite3-shm"):
        if (data / name).exists():
            assert _mode(data / name) == 0o600, name
    target = data / "spool" / "study" / "series" / "sop.dcm"
    write_atomically(target, b"x")
    assert _mode(target) == 0o600
    for folder in (data / "spool", data / "spool" / "study", data / "spool" / "study" / "series"):
        assert _mode(folder) == 0o700, folder


def test_log_files_are_private(tmp_path: Path, restore_logging: None) -> None:
    # `hemex serve` configures logging first, so the logs folder's parent is the data
    # directory, created here: it must be private too (it was 0755 from mkdir(parents)).
    configure_logging(LoggingSettings(), tmp_path / "data" / "logs")
    logging.getLogger("hemex.test").warning("probe")
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(tmp_path / "data" / "logs") == 0o700
    assert _mode(tmp_path / "data" / "logs" / "hemex.log") == 0o600
    AuditLog(tmp_path / "data" / "logs").close()
    assert _mode(tmp_path / "data" / "logs" / "audit.log") == 0o600


def _config_with_secrets(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[alerts.email]\n"
        f'password = "{SMTP_SECRET}"\n'
        "[[alerts.webhooks]]\n"
        'name = "oncall"\nurl = "http://127.0.0.1:9/hook"\n'
        f'token = "{WEBHOOK_SECRET}"\n',
        encoding="utf-8",
    )
    return path


def test_check_config_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(_config_with_secrets(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "oncall" in out  # the config really was read
    assert SMTP_SECRET not in out and WEBHOOK_SECRET not in out


def test_start_up_log_masks_secrets(tmp_path: Path, restore_logging: None) -> None:
    import json

    settings = load_settings(_config_with_secrets(tmp_path))
    assert settings.alerts.email.password is not None
    assert settings.alerts.email.password.get_secret_value() == SMTP_SECRET
    configure_logging(LoggingSettings(), tmp_path / "logs")
    # What `hemex serve` logs at start-up (daemon/cli.py _serve).
    logging.getLogger("daemon.cli").info("hemex starting settings=%s", json.dumps(settings.redacted()))
    text = (tmp_path / "logs" / "hemex.log").read_text()
    assert "starting settings=" in text
    assert SMTP_SECRET not in text and WEBHOOK_SECRET not in text


def test_operational_log_has_no_phi_and_audit_log_has_who_sent_what(
    tmp_path: Path, restore_logging: None,
) -> None:
    configure_logging(LoggingSettings(level="DEBUG"), tmp_path / "logs")
    running = start_receive_listener(tmp_path)
    try:
        path = tiny_ct(tmp_path / "in/0.dcm", generate_uid(), generate_uid(), 0)
        import pydicom

        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = PATIENT_ID, PATIENT_NAME
        assert send(running.port, ds) == 0x0000
        refused = pydicom.dcmread(path)
        refused.PatientID, refused.Modality = PATIENT_ID, "MR"
        refused.SOPInstanceUID = generate_uid()
        assert send(running.port, refused) == 0xA900  # the refusal is logged too
    finally:
        running.stop()
    for handler in logging.getLogger().handlers:
        handler.flush()
    log_text = (tmp_path / "logs" / "hemex.log").read_text()
    assert "c-store rejected" in log_text
    assert PATIENT_ID not in log_text and "Doe" not in log_text
    audit_text = (tmp_path / "logs" / "audit.log").read_text()
    assert "STORESCU" in audit_text and str(ds.SOPInstanceUID) in audit_text
    assert PATIENT_ID not in audit_text


# --- DICOM TLS ----------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    import subprocess

    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    required_tool("openssl", "Debian's openssl package")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem", cwd=d)
    return d


def _tls_associate(port: int, pki: Path, client_cert: bool):  # type: ignore[no-untyped-def]
    import ssl

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    if client_cert:
        context.load_cert_chain(pki / "client.pem", pki / "client.key")
    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="HEMEX", tls_args=(context, "127.0.0.1"))


def test_dicom_mutual_tls_accepts_a_client_certificate_and_refuses_none(tmp_path: Path, pki: Path) -> None:
    running = start_receive_listener(tmp_path, tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                                     tls_client_ca=pki / "ca.pem")
    try:
        assoc = _tls_associate(running.port, pki, client_cert=True)
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0x0000
        assoc.release()
        refused = _tls_associate(running.port, pki, client_cert=False)
        assert not refused.is_established
        plain = _send_plain_echo(running.port)
        assert not plain
    finally:
        running.stop()


def test_dicom_server_tls_without_client_ca(tmp_path: Path, pki: Path) -> None:
    running = start_receive_listener(tmp_path, tls_cert=pki / "server.pem", tls_key=pki / "server.key")
    try:
        assoc = _tls_associate(running.port, pki, client_cert=False)
        assert assoc.is_established
        assoc.release()
    finally:
        running.stop()


def test_dicom_tls_cert_without_key_is_a_configuration_error(tmp_path: Path, pki: Path) -> None:
    with pytest.raises(ConfigurationError, match="dicom.tls_cert needs dicom.tls_key"):
        server_context("dicom", pki / "server.pem", None, None)
    with pytest.raises(ConfigurationError, match="hl7.tls_key/tls_client_ca need hl7.tls_cert"):
        server_context("hl7", None, None, pki / "ca.pem")


def _send_plain_echo(port: int) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.network_timeout = 5
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="HEMEX")
    established = assoc.is_established
    if established:
        assoc.release()
    return established
