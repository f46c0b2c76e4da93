"""The scheduled drift check: is the site's observed accuracy past its configured limits?

Over the baselines of the last ``[performance] window_days``, for each model version and
masking method with at least ``min_cases`` labelled cases and ``min_positives``
expansions: sensitivity below ``min_sensitivity``, or expected calibration error above
``max_calibration_error``, is drift. Every check's figures go to ``maintenance_runs``
(``/metrics``: ``hemex_site_performance``, ``hemex_site_performance_drift``). A drift
is logged as a warning at every check while it lasts; the admin (``admin_email``) gets
one e-mail when it starts, queued through the outbox like any delivery.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from daemon.config import Settings
from daemon.ops.loop_metrics import PERFORMANCE_TASK
from daemon.ops.site_performance import ScoreFigures, site_performance
from daemon.state.database import Database
from domain.delivery import ADMIN_DESTINATION, Channel, DeliveryRequest
from domain.durable_files import ensure_private_dir, write_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drift:
    """One figure past its limit."""

    model: str
    version: str
    method: str
    check: str  # sensitivity | calibration
    value: float
    limit: float
    n: int

    def sentence(self) -> str:
        relation = "below" if self.check == "sensitivity" else "above"
        figure = "sensitivity" if self.check == "sensitivity" else "expected calibration error"
        return (f"{self.model} {self.version} (masks {self.method}): observed {figure} {self.value:.3f},"
                f" {relation} the limit {self.limit:.3f}, on {self.n} labelled cases")


def _key(kind: str, model: str, version: str, method: str, name: str) -> str:
    """A figure's key in maintenance_runs: [kind, model, version, method, name]."""
    return json.dumps([kind, model, version, method, name])


def _figure_key(kind: str, f: ScoreFigures, name: str) -> str:
    return _key(kind, f.name, f.version, f.method, name)


def check_drift(db: Database, settings: Settings, now: float) -> list[Drift]:
    """Run the check, record its figures, warn, and queue the admin e-mail for new drift."""
    perf = settings.performance
    since = datetime.fromtimestamp(now) - timedelta(days=perf.window_days)
    with db.reading() as repos:
        outcomes = repos.followups.outcomes(since=since)
        previous = repos.maintenance.last_runs().get(PERFORMANCE_TASK, (0.0, {}))[1]
    report = site_performance(outcomes, settings, n_boot=0)
    figures: dict[str, float] = {}
    drifts: list[Drift] = []
    for f in report.models:
        m = f.metrics
        figures[_figure_key("figure", f, "labelled_cases")] = m.n
        figures[_figure_key("figure", f, "expansions")] = m.n_positive
        if m.sensitivity.value is not None:
            figures[_figure_key("figure", f, "sensitivity")] = m.sensitivity.value
        if f.calibration_error is not None:
            figures[_figure_key("figure", f, "calibration_error")] = f.calibration_error
        enough = m.n >= perf.min_cases and m.n_positive >= perf.min_positives
        checks = (("sensitivity", m.sensitivity.value, perf.min_sensitivity, lambda v, lim: v < lim),
                  ("calibration", f.calibration_error, perf.max_calibration_error, lambda v, lim: v > lim))
        for check, value, limit, past in checks:
            drifting = enough and value is not None and past(value, limit)
            figures[_figure_key("drift", f, check)] = 1.0 if drifting else 0.0
            if drifting:
                assert value is not None
                drifts.append(Drift(f.name, f.version, f.method, check, value, limit, m.n))
    new = [d for d in drifts if not previous.get(_key("drift", d.model, d.version, d.method, d.check))]
    with db.transaction() as repos:
        repos.maintenance.record_run(PERFORMANCE_TASK, now, figures)
        if new and perf.admin_email:
            path = _write_mail(settings, new, now)
            repos.outbox.enqueue(DeliveryRequest(Channel.EMAIL, ADMIN_DESTINATION, f"drift:{now:.0f}", path), now)
    for d in drifts:
        log.warning("site performance drift model=%s version=%s method=%s check=%s value=%.3f limit=%.3f n=%d"
                    " new=%s", d.model, d.version, d.method, d.check, d.value, d.limit, d.n, d in new)
    log.info("site performance checked models=%d labelled=%d drift=%d", len(report.models), report.labelled,
             len(drifts))
    return drifts


def _write_mail(settings: Settings, drifts: list[Drift], now: float) -> Path:
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = f"[hemex] site performance drift: {len(drifts)} figure(s) past their limits"
    message["Message-ID"] = email.utils.make_msgid(domain="hemex.invalid")
    lines = ["The hemex drift check found the site's observed accuracy past its configured limits",
             f"(baselines of the last {settings.performance.window_days:g} days):", ""]
    lines += [f"- {d.sentence()}" for d in drifts]
    lines += ["", "Run `hemex performance` on the node for every figure with its 95 % interval, and read",
              "docs/site-performance.md before acting on them. This e-mail carries no patient data."]
    message.set_content("\n".join(lines) + "\n")
    folder = ensure_private_dir(settings.results_dir / "performance")
    path = folder / f"drift-{datetime.fromtimestamp(now).strftime('%Y%m%dT%H%M%S')}.eml"
    write_atomically(path, message.as_bytes())
    return path
