"""What the console shows of alerts: each alert group with its lifecycle, or a plain alert.

An alert with an acknowledgement lifecycle belongs to a group (``domain.alerts``): one
short code, the alerts of one patient that one acknowledgement answers, every step with
its time, and each delivery to each recipient (escalations included). An alert without
one (the "not analysed" notice, or one raised before groups existed) is shown plain: its
study, why it fired, and where it went. Typed view records only; nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from daemon.report.alert_files import alert_paths
from daemon.state.alert_repository import RaisedAlert
from daemon.state.repositories import Repositories
from domain.alerts import AlertGroup, AlertStep
from domain.delivery import Delivery
from domain.study import StudyStatus


@dataclass(frozen=True)
class AlertMember:
    """One raised alert: its study, and what its stored payload said."""

    alert: RaisedAlert
    status: StudyStatus | None
    reasons: tuple[str, ...]  # as the alert sent them (empty once its files were purged)
    volume_ml: float | None


@dataclass(frozen=True)
class Recipient:
    """One delivery of an alert: to whom, over what, and whether their system took it."""

    delivery: Delivery
    contact: str  # the roster contact it went to; "" for a broadcast webhook or e-mail


@dataclass(frozen=True)
class AlertCard:
    """An alert as the console shows it: a group with its lifecycle, or a plain alert
    (``group`` None, one member)."""

    group: AlertGroup | None
    members: tuple[AlertMember, ...]
    recipients: tuple[Recipient, ...]

    @property
    def raised_at(self) -> float:
        """When its newest alert was raised."""
        return max(m.alert.created_at for m in self.members)

    @property
    def escalation(self) -> str:
        """Where its escalation stands, in words ("" for a plain or acknowledged alert)."""
        group = self.group
        if group is None or not group.open:
            return ""
        if any(e.step is AlertStep.EXHAUSTED and e.at >= group.last_alert_at for e in group.events):
            return (f"escalated {group.level} time(s), then nobody was left on the roster"
                    if group.level else "nobody after the first contact on the roster: not escalated")
        if group.level:
            return f"escalated {group.level} time(s): now with on-call contact {group.level + 1}"
        if any(r.contact for r in self.recipients):
            return "with the first on-call contact; escalates if nobody acknowledges"
        return "sent to no on-call contact (no roster, or nobody on shift)"

    @property
    def reopened(self) -> bool:
        """Acknowledged once, then a new alert joined: open again."""
        return self.group is not None and self.group.open and self.group.acknowledged_at is not None


def recent_alert_cards(repos: Repositories, since: float, results_dir: Path) -> list[AlertCard]:
    """Alerts raised since ``since``, a card per group or plain alert, newest first."""
    return _cards(repos, repos.alerts.raised_since(since), results_dir)


def study_alert_cards(repos: Repositories, study_uid: str, results_dir: Path) -> list[AlertCard]:
    """The cards of a study's alerts (a group shows its other studies' alerts too)."""
    return _cards(repos, reversed(repos.alerts.of_study(study_uid)), results_dir)


def _cards(repos: Repositories, newest_first: Iterable[RaisedAlert], results_dir: Path) -> list[AlertCard]:
    cards, seen = [], set()
    for alert in newest_first:
        if alert.group_ref is None:
            cards.append(_plain_card(repos, alert, results_dir))
        elif alert.group_ref not in seen:
            seen.add(alert.group_ref)
            card = _group_card(repos, alert.group_ref, results_dir)
            cards.append(card if card is not None else _plain_card(repos, alert, results_dir))
    return sorted(cards, key=lambda c: c.raised_at, reverse=True)


def _plain_card(repos: Repositories, alert: RaisedAlert, results_dir: Path) -> AlertCard:
    item_key = f"{alert.study_uid}:{alert.alert_key}"  # as daemon/dispatch/alert_queue.py queues them
    deliveries = [d for d in repos.outbox.items(study_uid=alert.study_uid) if d.item_key == item_key]
    return AlertCard(None, (_member(repos, alert, results_dir),), tuple(Recipient(d, "") for d in deliveries))


def _group_card(repos: Repositories, ref: str, results_dir: Path) -> AlertCard | None:
    group = repos.alerts.group(ref)
    members = repos.alerts.members_of(ref)
    if group is None or not members:
        return None
    contacts = repos.alerts.delivery_contacts(ref)
    recipients = [Recipient(d, contacts[d.id])
                  for uid in dict.fromkeys(m.study_uid for m in members)
                  for d in repos.outbox.items(study_uid=uid) if d.id in contacts]
    recipients.sort(key=lambda r: (r.delivery.created_at, r.delivery.id))
    return AlertCard(group, tuple(_member(repos, m, results_dir) for m in members), tuple(recipients))


def _member(repos: Repositories, alert: RaisedAlert, results_dir: Path) -> AlertMember:
    status = repos.studies.find(alert.study_uid)
    reasons, volume = _sent_payload(results_dir, status, alert)
    return AlertMember(alert, status, reasons, volume)


def _sent_payload(results_dir: Path, status: StudyStatus | None,
                  alert: RaisedAlert) -> tuple[tuple[str, ...], float | None]:
    """The reasons and volume the alert's stored payload states (empty once purged)."""
    if status is None:
        return (), None
    payload_path, _ = alert_paths(results_dir, status.identity.handle, alert.alert_key)
    try:
        payload = json.loads(payload_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (), None
    volume = (payload.get("hematoma") or {}).get("volume_ml")
    return tuple(str(r) for r in payload.get("reasons", [])), float(volume) if volume is not None else None
