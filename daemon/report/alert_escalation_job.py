"""Job kind escalate_alert: an alert group nobody acknowledged in time goes to the next
contact of the on-call roster.

Input: an alert group reference (queued by dispatch with each alert, due
``escalate_after_s`` later). A group acknowledged since its newest alert ends here.
Otherwise the group's level rises by one and the contact at that level of the shift on
duty now is sent the group's newest alert (the webhook payload with an ``escalation``
section, the e-mail with "ESCALATED" in its subject and the reason first), the step
``escalated`` is stored, and the next escalation is queued. When the shift has nobody
at that level, the step ``exhausted`` is stored once and the log says so as an error.
Everything is one transaction with the files written before it.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from daemon.config import Settings
from daemon.dispatch.alert_queue import queue_to_contact
from daemon.jobs.wakeup import Wakeup
from daemon.report.alert_files import alert_paths
from daemon.state.database import Database
from domain.alerts import AlertGroup, AlertStep
from domain.durable_files import write_atomically
from domain.handles import study_handle
from domain.jobs import JobKind
from domain.oncall import contact_at_level

log = logging.getLogger(__name__)


def _escalated_files(group: AlertGroup, level: int, contact: str, files: dict[str, Path],
                     unanswered_s: float) -> dict[str, Path | None]:
    """The group's newest payload and e-mail, marked as an escalation, beside the originals."""
    notice = (f"ESCALATED: alert {group.short_code} not acknowledged for {unanswered_s / 60:.0f} min;"
              f" you are on-call contact {level + 1} of the roster")
    out: dict[str, Path | None] = {"webhook": None, "email": None}
    if "webhook" in files and files["webhook"].is_file():
        payload = json.loads(files["webhook"].read_bytes())
        payload["escalation"] = {"level": level, "contact": contact, "unacknowledged_s": round(unanswered_s),
                                 "notice": notice}
        target = files["webhook"].with_name(f"{files['webhook'].stem}.escalation-{level}.json")
        write_atomically(target, json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8"))
        out["webhook"] = target
    if "email" in files and files["email"].is_file():
        message = email.message_from_bytes(files["email"].read_bytes(), policy=email.policy.SMTP)
        subject = str(message["Subject"])
        del message["Subject"]
        message["Subject"] = f"[ESCALATED] {subject}"
        body = message.get_content() if hasattr(message, "get_content") else ""
        message.set_content(notice + "\n\n" + str(body))
        target = files["email"].with_name(f"{files['email'].stem}.escalation-{level}.eml")
        write_atomically(target, message.as_bytes())
        out["email"] = target
    return out


class AlertEscalationStage:
    """Runs ``escalate_alert`` jobs."""

    def __init__(self, settings: Settings, db: Database, outbox_wakeup: Wakeup | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._db = db
        self._outbox_wakeup = outbox_wakeup
        self._clock = clock

    def escalate_alert(self, group_ref: str) -> None:
        """Escalate the group to its next contact unless it was acknowledged."""
        alerts = self._settings.alerts
        now = self._clock()
        with self._db.reading() as repos:
            group = repos.alerts.group(group_ref)
            member = repos.alerts.latest_member(group_ref)
        if group is None or member is None or not group.open:
            log.info("escalation not needed group=%s reason=%s", group.short_code if group else "-",
                     "acknowledged" if group else "unknown group")
            return
        level = group.level + 1
        name = contact_at_level(alerts.shifts(), datetime.fromtimestamp(now), level)
        contact = alerts.contact(name) if name else None
        if contact is None:
            exhausted = group.first(AlertStep.EXHAUSTED)
            if exhausted is None or exhausted < group.last_alert_at:
                with self._db.transaction() as repos:
                    repos.alerts.add_event(group_ref, AlertStep.EXHAUSTED, now, f"no contact at level {level + 1}")
            log.error("alert unacknowledged and nobody left to escalate to group=%s level=%d",
                      group.short_code, level)
            return
        unanswered = now - group.last_alert_at
        payload, message = alert_paths(self._settings.results_dir, study_handle(member[0]), member[1])
        escalated = _escalated_files(group, level, contact.name, {"webhook": payload, "email": message}, unanswered)
        with self._db.transaction() as repos:
            current = repos.alerts.group(group_ref)
            if current is None or not current.open or current.level != group.level:
                return  # acknowledged (or escalated) while the files were written
            study_uid, alert_key = member
            queued = queue_to_contact(repos, contact, study_uid, alert_key,
                                      f"{group_ref}:escalation-{level}:{contact.name}", escalated, group_ref, now)
            repos.alerts.set_level(group_ref, level)
            repos.alerts.add_event(group_ref, AlertStep.ESCALATED, now, contact.name)
            repos.jobs.enqueue(JobKind.ESCALATE_ALERT, group_ref, now + alerts.acknowledgement.escalate_after_s, now)
        log.warning("alert escalated group=%s level=%d contact=%s items=%d unacknowledged_s=%.0f",
                    group.short_code, level, contact.name, queued, unanswered)
        if self._outbox_wakeup is not None:
            self._outbox_wakeup.notify()
