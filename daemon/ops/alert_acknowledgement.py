"""Acknowledging an alert: by its link (HTTP) or its short code (``hemex alerts --ack``),
and the list of alert groups with every step (``hemex alerts``).

The link's GET only shows what would be acknowledged, with a button; the POST of that
form acknowledges. Mail scanners and chat previews open links by themselves, and a GET
that acknowledged would silence an alert nobody read. The pages carry no PHI: study
handles, the short code, times and steps.

``AcknowledgementApp`` is a WSGI application for ``/alerts/ack/<token>``; the node serves
it on its metrics HTTP server.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from daemon.alert_links import ACK_PATH, AlertLinks, normal_code
from daemon.state.database import Database
from domain.alerts import AlertGroup

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_MAX_FORM_BYTES = 4096
_MAX_NAME_CHARS = 80


@dataclass(frozen=True)
class AckOutcome:
    """What to answer: an HTTP status, a title, lines of text, and whether to show the form."""

    status: str
    title: str
    lines: tuple[str, ...]
    form: bool = False
    group: AlertGroup | None = None


def _when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds")


def describe(group: AlertGroup) -> tuple[str, ...]:
    """A group in a few lines, without PHI."""
    state = "open" if group.open else f"acknowledged {_when(group.acknowledged_at)} by {group.acknowledged_by}"
    return (f"alert {group.short_code}: {state}",
            f"studies: {', '.join(group.studies) or '-'}",
            (f"first alert {_when(group.created_at)}, latest {_when(group.last_alert_at)},"
             f" escalation level {group.level}"))


def show(db: Database, links: AlertLinks, token: str) -> AckOutcome:
    """What the link of ``token`` would acknowledge (GET)."""
    group = _group_of(db, links, token)
    if group is None:
        return _refused()
    if not group.open:
        return AckOutcome("200 OK", "Already acknowledged", describe(group), group=group)
    return AckOutcome("200 OK", "Acknowledge this alert?", describe(group), form=True, group=group)


def acknowledge(db: Database, links: AlertLinks, token: str, by: str, now: float) -> AckOutcome:
    """Acknowledge the group of ``token`` (POST)."""
    ref = links.ref_of(token)
    if ref is None:
        return _refused()
    with db.transaction() as repos:
        changed = repos.alerts.acknowledge(ref, f"{by or 'someone'} (link)", now)
        group = repos.alerts.group(ref)
    if group is None:
        return _refused()
    title = "Acknowledged, thank you" if changed else "Already acknowledged"
    return AckOutcome("200 OK", title, describe(group), group=group)


def acknowledge_code(db: Database, code: str, by: str, now: float) -> tuple[bool, AlertGroup | None]:
    """Acknowledge the group whose short code is ``code``: (changed, group or None)."""
    with db.transaction() as repos:
        group = repos.alerts.group_by_code(normal_code(code))
        if group is None:
            return False, None
        changed = repos.alerts.acknowledge(group.ref, f"{by or 'someone'} (code)", now)
        return changed, repos.alerts.group(group.ref)


def list_groups(db: Database, limit: int = 50) -> list[AlertGroup]:
    """The newest alert groups, each with its steps."""
    with db.reading() as repos:
        return repos.alerts.recent_groups(limit)


def format_group(group: AlertGroup) -> str:
    """A group and its steps, one per line, as ``hemex alerts`` prints them."""
    lines = list(describe(group))
    lines += [f"  {_when(event.at)}  {event.step.value:<12} {event.detail}" for event in group.events]
    return "\n".join(lines)


def _group_of(db: Database, links: AlertLinks, token: str) -> AlertGroup | None:
    ref = links.ref_of(token)
    if ref is None:
        return None
    with db.reading() as repos:
        return repos.alerts.group(ref)


def _refused() -> AckOutcome:
    return AckOutcome("404 Not Found", "Unknown or expired link",
                      ("This acknowledgement link is not valid (damaged, or older than its validity).",
                       "Acknowledge with the alert's short code on the node: hemex alerts --ack CODE"))


class AcknowledgementApp:
    """WSGI application for ``/alerts/ack/<token>``: GET shows, POST acknowledges."""

    def __init__(self, db: Database, links: AlertLinks, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._links = links
        self._clock = clock

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        token = str(environ.get("PATH_INFO", ""))[len(ACK_PATH):]
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "GET":
            outcome = show(self._db, self._links, token)
        elif method == "POST":
            outcome = acknowledge(self._db, self._links, token, self._name(environ), self._clock())
        else:
            outcome = AckOutcome("405 Method Not Allowed", "Method not allowed", ("Use the link, then the button.",))
        body = _page(outcome).encode("utf-8")
        start_response(outcome.status, [
            ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
            # The token is in the URL: no caching, no referrer to wherever the page links.
            ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff")])
        return [body]

    @staticmethod
    def _name(environ: dict[str, Any]) -> str:
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), _MAX_FORM_BYTES)
        except ValueError:
            length = 0
        form = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace")) if length else {}
        name = " ".join((form.get("by") or [""])[0].split())
        return name[:_MAX_NAME_CHARS]


def _page(outcome: AckOutcome) -> str:
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in outcome.lines)
    form = ('<form method="post"><label>Your name <input name="by" maxlength="80" autocomplete="name"></label>'
            ' <button type="submit">Acknowledge</button></form>') if outcome.form else ""
    title = html.escape(outcome.title)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>hemex: {title}</title>"
            f"<meta name='viewport' content='width=device-width'></head><body><h1>{title}</h1>"
            f"{lines}{form}</body></html>")
