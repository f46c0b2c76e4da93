"""The console's pages and its one action, as a Flask blueprint.

Pages: studies (``/studies``), one study (``/studies/<handle>``, its key image at
``.../key-image.png``), deliveries and dead letters (``/deliveries``, retry with
``POST /deliveries/retry``), alerts (``/alerts``), and the login form for local
accounts. URLs name a study by its non-PHI handle, never by a UID, because proxies and
browsers keep URLs in their logs and histories.

Every request passes ``auth.request_user`` first. What is seen and done is audited:
logins (also failed ones), each study page viewed, each retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from werkzeug.wrappers.response import Response as BaseResponse

from daemon.audit_log import AuditLog
from daemon.config import Settings
from daemon.console import study_views
from daemon.console.accounts import AccountsFile
from daemon.console.auth import ConsoleUser, LoginThrottle, Refused, request_user
from daemon.deliver.outbox import retry_dead_letters
from daemon.state.database import Database
from domain.dicom_time import parse_dicom_datetime
from domain.version import __version__

MAX_HOURS_SHOWN = 24 * 31


@dataclass(frozen=True)
class ConsoleDependencies:
    """What the console reads and acts through (bound once, by ``daemon.app``)."""

    settings: Settings
    db: Database
    audit: AuditLog
    accounts: AccountsFile | None
    deliver_now: Callable[[], None]  # wakes the outbox worker after a retry
    clock: Callable[[], float] = field(default=time.time)


def console_blueprint(deps: ConsoleDependencies) -> Blueprint:
    """The console's routes; ``deps`` are bound into them (no module globals)."""
    bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/console-static")
    throttle = LoginThrottle()
    settings = deps.settings.console

    @bp.before_request
    def _who_is_asking() -> BaseResponse | tuple[str, int] | None:
        try:
            user = request_user(settings, request.remote_addr or "", request.headers, session, deps.accounts)
        except Refused as refusal:
            return render_template("console/refused.html", reason=refusal.reason, user=None), refusal.status
        g.user = user
        if user is None and request.endpoint not in ("console.login", "console.static"):
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
        return None

    @bp.app_template_filter("when")
    def _when(epoch: float | None) -> str:
        return "" if epoch is None else datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")

    @bp.app_template_filter("dicom_when")
    def _dicom_when(text: str | None) -> str:
        parsed = parse_dicom_datetime(text)
        return (text or "-") if parsed is None else parsed.strftime("%Y-%m-%d %H:%M")

    @bp.app_context_processor
    def _page_context() -> dict[str, object]:
        return {"version": __version__, "auth_mode": settings.auth}

    @bp.get("/")
    def index() -> BaseResponse:
        return redirect(url_for("console.studies"))

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse | str | tuple[str, int]:
        if settings.auth != "accounts" or deps.accounts is None:
            return redirect(url_for("console.studies"))
        target = _safe_next(request.values.get("next", ""))
        if request.method == "GET":
            return render_template("console/login.html", next=target, user=None)
        name, password = request.form.get("name", "").strip(), request.form.get("password", "")
        address = request.remote_addr or ""
        if throttle.locked(name, address):
            deps.audit.record("console-login-refused", user=name, peer=address, reason="too many failed logins")
            return render_template("console/login.html", next=target, user=None,
                                   error="Too many failed logins: wait five minutes."), 429
        account = deps.accounts.verify(name, password)
        if account is None:
            throttle.failed(name, address)
            deps.audit.record("console-login-failed", user=name, peer=address)
            return render_template("console/login.html", next=target, user=None,
                                   error="Unknown name or wrong password."), 401
        throttle.succeeded(name, address)
        session.clear()
        session.permanent = True
        session["user"] = account.name
        deps.audit.record("console-login", user=account.name, role=account.role, peer=address)
        return redirect(target)

    @bp.post("/logout")
    def logout() -> BaseResponse:
        user = _user()
        deps.audit.record("console-logout", user=user.name, peer=request.remote_addr)
        session.clear()
        return redirect(url_for("console.login"))

    @bp.get("/studies")
    def studies() -> str:
        hours = _hours()
        with deps.db.reading() as repos:
            rows = study_views.studies_overview(repos, deps.clock() - hours * 3600)
        return render_template("console/studies.html", rows=rows, hours=hours, user=_user(), page="studies")

    @bp.get("/studies/<handle>")
    def study(handle: str) -> str:
        with deps.db.reading() as repos:
            detail = study_views.study_detail(repos, handle)
        if detail is None:
            abort(404)
        user = _user()
        deps.audit.record("console-study-viewed", user=user.name, peer=request.remote_addr,
                          study_uid=detail.status.identity.study_uid)
        return render_template("console/study.html", d=detail, user=user, page="studies")

    @bp.get("/studies/<handle>/key-image.png")
    def key_image(handle: str) -> Response:
        with deps.db.reading() as repos:
            detail = study_views.study_detail(repos, handle)
        if detail is None or detail.key_image is None:
            abort(404)
        return send_file(detail.key_image, mimetype="image/png", max_age=0)

    @bp.get("/deliveries")
    def deliveries() -> str:
        with deps.db.reading() as repos:
            dead = study_views.dead_letters(repos)
            pending = study_views.pending_deliveries(repos)
            handles = study_views.handles_of(repos, [*dead, *pending])
        return render_template("console/deliveries.html", dead=dead, pending=pending, handles=handles,
                               user=_user(), page="deliveries")

    @bp.post("/deliveries/retry")
    def retry() -> BaseResponse:
        user = _user()
        if not user.may_act:
            abort(403)
        ids = None if request.form.get("all") else [int(v) for v in request.form.getlist("id") if v.isdigit()]
        if ids == []:
            flash("Select the dead letters to retry, or retry all.")
            return redirect(url_for("console.deliveries"))
        count = retry_dead_letters(deps.db, deps.clock(), ids)
        deps.audit.record("console-dead-letters-retried", user=user.name, peer=request.remote_addr,
                          ids=ids if ids is not None else "all", count=count)
        deps.deliver_now()
        flash(f"{count} dead letter(s) queued for delivery again.")
        return redirect(url_for("console.deliveries"))

    @bp.get("/alerts")
    def alerts() -> str:
        hours = _hours()
        with deps.db.reading() as repos:
            rows = study_views.recent_alerts(repos, deps.clock() - hours * 3600, deps.settings.results_dir)
        return render_template("console/alerts.html", rows=rows, hours=hours, user=_user(), page="alerts")

    def _hours() -> float:
        try:
            hours = float(request.args.get("hours", settings.hours_shown))
        except ValueError:
            hours = settings.hours_shown
        return min(max(hours, 1.0), MAX_HOURS_SHOWN)

    return bp


def _user() -> ConsoleUser:
    user = g.get("user")
    if user is None:  # before_request lets no anonymous request through to a page
        abort(401)
    return user  # type: ignore[no-any-return]


def _safe_next(target: str) -> str:
    """A redirect target on this server only (no scheme, no host, no protocol-relative URL)."""
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc or "\\" in target:
        return "/studies"
    return target
