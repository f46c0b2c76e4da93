"""Series completion decisions, with an injected clock (no sleeps)."""

import pytest

from daemon.assemble.series_completion import decide_completion
from daemon.config import SeriesCompletionSettings
from domain.study import SeriesProgress

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

SETTINGS = SeriesCompletionSettings(quiet_period_s=30, use_expected_image_count=True)


def test_not_complete_during_quiet_period_and_recheck_at_its_end() -> None:
    decision = decide_completion(SeriesProgress("1.2.1", "1.2", 10, None, last_received_at=1000.0), 1010.0, SETTINGS)
    assert not decision.complete
    assert decision.recheck_at == 1030.0


def test_complete_after_quiet_period() -> None:
    decision = decide_completion(SeriesProgress("1.2.1", "1.2", 10, None, last_received_at=1000.0), 1030.0, SETTINGS)
    assert decision.complete
    assert "quiet" in decision.reason


def test_complete_early_when_expected_count_reached() -> None:
    decision = decide_completion(SeriesProgress("1.2.1", "1.2", 40, 40, last_received_at=1000.0), 1000.5, SETTINGS)
    assert decision.complete
    assert "expected" in decision.reason


def test_expected_count_ignored_when_disabled() -> None:
    settings = SeriesCompletionSettings(quiet_period_s=30, use_expected_image_count=False)
    decision = decide_completion(SeriesProgress("1.2.1", "1.2", 40, 40, last_received_at=1000.0), 1000.5, settings)
    assert not decision.complete


def test_partial_series_waits_even_with_expected_count() -> None:
    decision = decide_completion(SeriesProgress("1.2.1", "1.2", 39, 40, last_received_at=1000.0), 1001.0, SETTINGS)
    assert not decision.complete
