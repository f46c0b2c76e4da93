"""Metrics of the closed loop, read from the database at each scrape: alert timings and
steps, follow-up roles and outcomes, and the last drift check of the site's accuracy.

No label carries PHI: steps, roles, statuses, model names and versions, check names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.state.database import Database
from domain.alerts import AlertStep
from domain.followup import Role

PERFORMANCE_TASK = "site-performance"
# Seconds: from half a minute to a day.
_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)


def _histogram(name: str, documentation: str, values: list[float]) -> HistogramMetricFamily:
    counts = [sum(1 for v in values if v <= bound) for bound in _BUCKETS]
    buckets = [(f"{bound:g}", float(count)) for bound, count in zip(_BUCKETS, counts)]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=float(sum(values)))


class ClosedLoopCollector(Collector):
    """Alert, follow-up and site-performance figures (``/metrics``)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        with self._db.reading() as repos:
            timings = repos.alerts.timings()
            steps = repos.alerts.step_counts()
            open_groups = repos.alerts.open_count()
            roles = repos.followups.counts_by_role()
            outcomes = repos.followups.outcomes()
            runs = repos.maintenance.last_runs()
        yield _histogram("hemex_alert_time_to_alert_seconds",
                         "From the study's last image to the first peer that accepted its alert.",
                         [t.sent_at - t.images_received_at for t in timings
                          if t.sent_at is not None and t.images_received_at is not None])
        yield _histogram("hemex_alert_time_to_acknowledge_seconds",
                         "From an alert being queued to the acknowledgement of its group.",
                         [t.acknowledged_at - t.queued_at for t in timings if t.acknowledged_at is not None])
        open_gauge = GaugeMetricFamily("hemex_alerts_unacknowledged", "Alert groups not acknowledged since"
                                       " their newest alert.")
        open_gauge.add_metric([], open_groups)
        yield open_gauge
        step_gauge = GaugeMetricFamily("hemex_alert_steps", "Alert steps recorded, by step.", labels=["step"])
        for step in AlertStep:
            step_gauge.add_metric([step.value], steps.get(step.value, 0))
        yield step_gauge
        role_gauge = GaugeMetricFamily("hemex_followup_studies", "Reported head CTs by follow-up role.",
                                       labels=["role"])
        for role in Role:
            role_gauge.add_metric([role.value], roles.get(role.value, 0))
        yield role_gauge
        outcome_gauge = GaugeMetricFamily("hemex_observed_outcomes", "Baselines with an observed outcome,"
                                          " by status.", labels=["status"])
        statuses = [o.change.status for o in outcomes]
        for status in ("labelled", "not_assessable"):
            outcome_gauge.add_metric([status], statuses.count(status))
        yield outcome_gauge
        yield from self._performance(runs)

    @staticmethod
    def _performance(runs: dict[str, tuple[float, dict[str, float]]]) -> Iterable[Metric]:
        figures = GaugeMetricFamily("hemex_site_performance", "Figures of the last drift check, per model"
                                    " version (window of [performance] window_days).",
                                    labels=["model", "version", "method", "figure"])
        drift = GaugeMetricFamily("hemex_site_performance_drift", "1 when the last drift check found the"
                                  " figure past its configured limit.", labels=["model", "version", "method", "check"])
        checked = GaugeMetricFamily("hemex_site_performance_checked_timestamp_seconds",
                                    "When the drift check last ran.")
        if PERFORMANCE_TASK in runs:
            ran_at, numbers = runs[PERFORMANCE_TASK]
            checked.add_metric([], ran_at)
            for key, value in numbers.items():
                kind, model, version, method, name = json.loads(key)
                (drift if kind == "drift" else figures).add_metric([model, version, method, name], value)
        yield figures
        yield drift
        yield checked
