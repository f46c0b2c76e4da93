"""Series completion decisions, with an injected clock (no sleeps)."""

import pytest

from daemon.assemble.series_completion import decide_completion, is_whole_stack
from daemon.config import SeriesCompletionSettings
from domain.study import SeriesProgress

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

SETTINGS = SeriesCompletionSettings(quiet_period_s=30, use_expected_image_count=True, use_slice_positions=False)
STACK = SeriesCompletionSettings(quiet_period_s=30, confirm_s=1.0, min_stack_slices=10)


def _progress(count: int, expected: int | None = None) -> SeriesProgress:
    return SeriesProgress("1.2.1", "1.2", count, expected, last_received_at=1000.0)


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


def test_a_whole_stack_completes_after_the_confirm_period() -> None:
    positions = [-50.0 + 2.5 * i for i in range(40)][::-1]  # any order
    assert not decide_completion(_progress(40), 1000.5, STACK, positions).complete
    assert decide_completion(_progress(40), 1000.5, STACK, positions).recheck_at == 1001.0
    decision = decide_completion(_progress(40), 1001.0, STACK, positions)
    assert decision.complete and "whole stack of 40 slices" in decision.reason


def test_a_released_whole_stack_completes_at_once() -> None:
    positions = [2.5 * i for i in range(40)]
    decision = decide_completion(_progress(40), 1000.01, STACK, positions, released=True)
    assert decision.complete and decision.reason == "whole stack of 40 slices, association released"
    gap = [p for i, p in enumerate(positions) if i != 17]
    decision = decide_completion(_progress(39), 1000.01, STACK, gap, released=True)
    assert not decision.complete and decision.recheck_at == 1001.0  # the confirm period, then the quiet one


def test_a_release_does_not_override_images_in_acquisition() -> None:
    positions = [2.5 * i for i in range(30)]
    assert not decide_completion(_progress(30, expected=40), 1000.01, STACK, positions, released=True).complete


def test_a_stack_with_a_gap_waits_the_quiet_period() -> None:
    positions = [2.5 * i for i in range(40) if i != 17]
    decision = decide_completion(_progress(39), 1001.0, STACK, positions)
    assert not decision.complete and decision.recheck_at == 1030.0
    assert decide_completion(_progress(39), 1030.0, STACK, positions).complete


@pytest.mark.parametrize("positions, whole", [
    ([2.5 * i for i in range(12)], True),
    ([0.625 * i + 0.004 * (i % 2) for i in range(12)], True),  # rounding in Image Position (Patient)
    ([2.5 * i for i in range(9)], False),  # fewer slices than min_stack_slices
    ([2.5 * i for i in range(12)] + [5.0], False),  # a repeated position: two reconstructions
    ([2.5 * i for i in range(12)] + [None], False),  # an image without a position
    ([2.5 * i for i in range(6)] + [15.0 + 3.0 * i for i in range(6)], False),  # spacing changes
    ([0.0] * 12, False),
])
def test_whole_stack(positions: list[float | None], whole: bool) -> None:
    assert is_whole_stack(positions, min_slices=10) is whole


def test_slice_positions_are_not_used_when_images_in_acquisition_is_sent() -> None:
    positions = [2.5 * i for i in range(30)]
    decision = decide_completion(_progress(30, expected=40), 1001.0, STACK, positions)
    assert not decision.complete and decision.recheck_at == 1030.0
