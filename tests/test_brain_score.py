"""BRAIN score points (Wang et al., Stroke 2015) and only verified published risks."""

from __future__ import annotations

import pytest

from inference.scores.brain_score import compute_brain_score, hours_points, volume_points

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database


@pytest.mark.parametrize("ml, points", [(0, 0), (10, 0), (10.01, 5), (20, 5), (20.01, 7), (80, 7)])
def test_volume_points(ml: float, points: int) -> None:
    assert volume_points(ml) == points


@pytest.mark.parametrize("hours, points", [(0, 5), (1, 5), (1.01, 4), (2, 4), (2.5, 3), (3, 3),
                                           (3.5, 2), (4, 2), (4.5, 1), (5, 1), (5.01, 0), (30, 0)])
def test_hours_points(hours: float, points: int) -> None:
    assert hours_points(hours) == points


def test_maximum_score_is_24_with_published_risk() -> None:
    s = compute_brain_score(25.0, True, True, True, 0.5)
    assert s.points == 24 and s.published_risk == pytest.approx(0.858)
    assert s.components == {"baseline_volume": 7, "recurrent_ich": 4, "anticoagulation": 6,
                            "intraventricular_extension": 2, "hours_onset_to_ct": 5}


def test_minimum_score_is_0_with_published_risk() -> None:
    s = compute_brain_score(5.0, False, False, False, 8.0)
    assert s.points == 0 and s.published_risk == pytest.approx(0.034) and s.missing == ()


def test_intermediate_score_has_no_unverified_risk() -> None:
    s = compute_brain_score(15.0, False, True, False, 2.5)
    assert s.points == 5 + 6 + 3
    assert s.published_risk is None and "not verified" in s.note
    assert "warfarin" in s.note


def test_missing_component_gives_no_points_and_names_it() -> None:
    s = compute_brain_score(15.0, None, False, True, None)
    assert s.points is None and s.published_risk is None
    assert s.missing == ("recurrent_ich", "hours_onset_to_ct")
    assert s.components == {"baseline_volume": 5, "anticoagulation": 0, "intraventricular_extension": 2}
