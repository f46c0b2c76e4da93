"""Hand an alert to the outbox durably, once per study and alert key."""

from __future__ import annotations

import logging
import re
import time
from contextlib import nullcontext
from pathlib import Path
from sqlite3 import Connection

from daemon.alert.alert_message import build_alert_payload, build_email, payload_json
from daemon.alert.rules import decide_alert
from daemon.config import AlertSettings
from daemon.deliver.channels import EMAIL_CHANNEL, WEBHOOK_CHANNEL
from daemon.deliver.email_sender import EMAIL_DESTINATION
from daemon.deliver.outbox import Outbox
from daemon.state.database import Database
from domain.analysis import StudyAnalysis
from domain.durable_files import ensure_private_dir, write_atomically

log = logging.getLogger(__name__)


def alert_files(results_dir: Path, handle: str, alert_key: str) -> tuple[Path, Path]:
    """Where the payload (JSON) and the e-mail message of one alert are kept."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", alert_key).strip("-")
    folder = Path(results_dir) / "alerts" / handle
    return folder / f"{name}.json", folder / f"{name}.eml"


def queue_alert(db: Database, outbox: Outbox, analysis: StudyAnalysis, settings: AlertSettings,
                results_dir: Path, conn: Connection | None = None) -> bool:
    """Queue the alert ``analysis`` raises, if any and not sent before; True when queued.

    The payload and e-mail are written atomically under ``results_dir/alerts/<handle>/``
    first; then one transaction (``conn``, the caller's, when given) records (study,
    alert key) in ``alerts`` and queues one outbox item per webhook target and one for
    e-mail, so a crash leaves either nothing recorded (and the alert is raised again) or
    everything queued.
    """
    decision = decide_alert(analysis, settings)
    handle, study_uid = analysis.identity.handle, analysis.identity.study_uid
    if decision is None:
        log.info("no alert study=%s", handle)
        return False
    if db.query("SELECT 1 FROM alerts WHERE study_uid = ? AND alert_key = ?", (study_uid, decision.key)):
        log.info("alert already sent study=%s key=%s", handle, decision.key)
        return False
    payload = build_alert_payload(analysis, decision)
    json_path, email_path = alert_files(results_dir, handle, decision.key)
    ensure_private_dir(json_path.parent)
    write_atomically(json_path, payload_json(payload))
    email_wanted = settings.email.enabled and bool(settings.email.recipients)
    if email_wanted:
        write_atomically(email_path, build_email(payload))

    item_key = f"{study_uid}:{decision.key}"
    with nullcontext(conn) if conn is not None else db.transaction() as tx:
        inserted = tx.execute("INSERT OR IGNORE INTO alerts(study_uid, alert_key, created_at) VALUES (?, ?, ?)",
                              (study_uid, decision.key, time.time())).rowcount == 1
        if not inserted:  # another worker recorded it between the check and here
            return False
        for target in settings.webhooks:
            outbox.enqueue(WEBHOOK_CHANNEL, target.name, item_key, json_path, study_uid, conn=tx)
        if email_wanted:
            outbox.enqueue(EMAIL_CHANNEL, EMAIL_DESTINATION, item_key, email_path, study_uid, conn=tx)
    log.info("alert queued study=%s key=%s reasons=%s webhooks=%d email=%s", handle, decision.key,
             ",".join(decision.reasons), len(settings.webhooks), email_wanted)
    return True
