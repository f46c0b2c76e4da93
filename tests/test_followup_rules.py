"""The follow-up rules (domain/followup.py) and the on-call roster (domain/oncall.py): pure
functions, every decision and edge case the issue names."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest

from domain.followup import (
    FollowupRules,
    HeadCtScan,
    Procedure,
    Role,
    VolumeReading,
    assign_roles,
    expansion_by_volume,
    is_listed,
    observe_change,
)
from domain.oncall import Shift, contact_at_level, on_duty, parse_weekday

pytestmark = pytest.mark.no_database

T0 = datetime(2026, 11, 23, 10, 0)
RULES = FollowupRules()


def scan(uid: str, hours: float | None, volume: float = 20.0) -> HeadCtScan:
    return HeadCtScan(uid, f"st-{uid}", None if hours is None else T0 + timedelta(hours=hours), volume)


def roles(*scans: HeadCtScan) -> dict[str, tuple[Role, str | None, int]]:
    return {p.study_uid: (p.role, p.baseline_study_uid, p.sequence) for p in assign_roles(scans, RULES)}


@pytest.mark.parametrize("base, follow, grew", [(10, 16.5, True), (10, 16, True), (30, 36, False), (30, 40.1, True),
                                                (3, 4.1, True), (3, 3.9, False), (0, 1, True), (0, 0, False)])
def test_expansion_rule_is_more_than_6_ml_or_33_percent(base: float, follow: float, grew: bool) -> None:
    assert expansion_by_volume(base, follow) is grew


def test_first_ct_in_the_window_is_the_follow_up_the_next_a_later_one() -> None:
    decided = roles(scan("b", 0), scan("f1", 20), scan("f2", 48))
    assert decided == {"b": (Role.BASELINE, None, 0), "f1": (Role.FOLLOWUP, "b", 1),
                       "f2": (Role.LATER_FOLLOWUP, "b", 2)}


def test_a_ct_before_the_window_is_neither_follow_up_nor_new_baseline() -> None:
    decided = roles(scan("b", 0), scan("repeat", 1.0, volume=25.0), scan("f", 24))
    assert decided["repeat"] == (Role.TOO_EARLY, "b", -1)
    assert decided["f"] == (Role.FOLLOWUP, "b", 1)  # paired with the admission CT, not the repeat


def test_a_ct_after_the_window_is_a_new_baseline_and_opens_its_own_window() -> None:
    decided = roles(scan("b", 0), scan("late", 80), scan("late-f", 100))
    assert decided["late"] == (Role.BASELINE, None, 0)
    assert decided["late-f"] == (Role.FOLLOWUP, "late", 1)
    reason = next(p.reason for p in assign_roles([scan("b", 0), scan("late", 80)], RULES) if p.study_uid == "late")
    assert "beyond the 72 h window" in reason


def test_window_edges_are_inclusive() -> None:
    assert roles(scan("b", 0), scan("f", 3.0))["f"][0] is Role.FOLLOWUP
    assert roles(scan("b", 0), scan("f", 72.0))["f"][0] is Role.FOLLOWUP
    assert roles(scan("b", 0), scan("f", 72.01))["f"][0] is Role.BASELINE


def test_without_hematoma_no_baseline_and_no_follow_up() -> None:
    decided = roles(scan("clean", 0, volume=0.0), scan("next", 24, volume=12.0))
    assert decided["clean"][0] is Role.NO_HEMATOMA
    assert decided["next"] == (Role.BASELINE, None, 0)  # the node never saw a baseline: it is one


def test_a_baseline_arriving_after_its_follow_up_turns_it_into_one() -> None:
    alone = roles(scan("f", 24))
    assert alone["f"][0] is Role.BASELINE
    both = roles(scan("f", 24), scan("b", 0))  # input order does not matter
    assert both["f"] == (Role.FOLLOWUP, "b", 1)


def test_a_ct_without_time_is_not_paired() -> None:
    assert roles(scan("b", 0), scan("x", None))["x"] == (Role.NO_TIME, None, -1)


def reading(volume: float, hours: float = 0.0, method: str = "hemex-threshold", version: str = "1.0.0",
            ivh: float | None = None) -> VolumeReading:
    return VolumeReading(volume, method, version, T0 + timedelta(hours=hours), ivh)


def test_growth_is_labelled_expansion_with_absolute_and_relative_change() -> None:
    change = observe_change(reading(20.0), reading(28.0, 24), RULES)
    assert change.expansion is True and change.change_ml == pytest.approx(8.0)
    assert change.change_relative == pytest.approx(0.4) and change.hours_between == pytest.approx(24.0)
    assert change.status == "labelled"


def test_a_small_fall_is_no_expansion() -> None:
    change = observe_change(reading(20.0), reading(18.0, 24), RULES)
    assert change.expansion is False and change.evacuation == "none"


def test_volumes_of_different_methods_are_not_compared() -> None:
    change = observe_change(reading(20.0), reading(40.0, 24, version="2.0.0"), RULES)
    assert change.expansion is None and change.revised_expansion is None
    assert "hemex-threshold 1.0.0" in change.reasons[0] and "hemex-threshold 2.0.0" in change.reasons[0]


def test_reported_evacuation_hides_growth_unless_it_grew_anyway() -> None:
    surgery = Procedure("I10P", "00C00ZZ", T0 + timedelta(hours=6), "ORM^O01 message 1")
    fell = observe_change(reading(40.0), reading(10.0, 24), RULES, [surgery])
    assert fell.expansion is None and fell.evacuation == "procedure" and "evacuation reported" in fell.reasons[0]
    grew = observe_change(reading(20.0), reading(30.0, 24), RULES, [surgery])
    assert grew.expansion is True and "despite" in grew.reasons[0]
    before = Procedure("I10P", "00C00ZZ", T0 - timedelta(hours=1), "ADT PR1")  # before the baseline: not between
    assert observe_change(reading(40.0), reading(39.0, 24), RULES, [before]).evacuation == "none"


def test_a_large_unexplained_fall_is_not_labelled() -> None:
    change = observe_change(reading(40.0), reading(20.0, 24), RULES)
    assert change.expansion is None and change.evacuation == "volume_drop"
    # Below either limit (4 mL, or 20 %) it is a fall, labelled no expansion.
    assert observe_change(reading(10.0), reading(6.0, 24), RULES).expansion is False
    assert observe_change(reading(40.0), reading(33.0, 24), RULES).expansion is False


def test_revised_definition_needs_ivh_measured_on_both() -> None:
    no_ivh = observe_change(reading(20.0), reading(21.0, 24), RULES)
    assert no_ivh.expansion is False and no_ivh.revised_expansion is None
    assert any("not assessable" in r for r in no_ivh.reasons)
    grew_by_volume = observe_change(reading(20.0), reading(30.0, 24), RULES)
    assert grew_by_volume.revised_expansion is True  # the volume rule alone decides it
    new_ivh = observe_change(reading(20.0, ivh=0.0), reading(21.0, 24, ivh=2.0), RULES)
    assert new_ivh.expansion is False and new_ivh.revised_expansion is True
    grown_ivh = observe_change(reading(20.0, ivh=3.0), reading(21.0, 24, ivh=4.5), RULES)
    assert grown_ivh.revised_expansion is True
    steady_ivh = observe_change(reading(20.0, ivh=3.0), reading(21.0, 24, ivh=3.5), RULES)
    assert steady_ivh.revised_expansion is False


def test_procedure_codes_match_with_or_without_system() -> None:
    procedure = Procedure("C4", "61313", T0, "ADT PR1")
    assert is_listed(procedure, ["C4:61313"]) and is_listed(procedure, ["61313"]) and is_listed(procedure, ["c4:61313"])
    assert not is_listed(procedure, ["I10P:61313"]) and not is_listed(procedure, ["C4:61312"])


def test_window_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        FollowupRules(min_hours=10, max_hours=5)


WEEKDAY_DAY = Shift(frozenset(range(5)), time(8), time(18), ("fellow", "consultant"))
NIGHTS = Shift(frozenset(range(7)), time(18), time(8), ("resident", "consultant"))
WEEKEND_DAY = Shift(frozenset({5, 6}), time(8), time(18), ("weekend", "consultant"))


@pytest.mark.parametrize("when, expected", [
    (datetime(2026, 11, 23, 9, 0), "fellow"),      # Monday morning
    (datetime(2026, 11, 23, 18, 0), "resident"),   # Monday 18:00: the night shift starts
    (datetime(2026, 11, 24, 7, 59), "resident"),   # Tuesday before 08:00: Monday's night
    (datetime(2026, 11, 28, 12, 0), "weekend"),    # Saturday noon
    (datetime(2026, 11, 29, 3, 0), "resident"),    # Sunday night
])
def test_the_shift_on_duty_depends_on_weekday_and_time(when: datetime, expected: str) -> None:
    assert contact_at_level([WEEKDAY_DAY, NIGHTS, WEEKEND_DAY], when, 0) == expected


def test_escalation_goes_down_the_chain_and_ends() -> None:
    shifts = [WEEKDAY_DAY]
    monday = datetime(2026, 11, 23, 9, 0)
    assert contact_at_level(shifts, monday, 1) == "consultant"
    assert contact_at_level(shifts, monday, 2) is None
    assert on_duty(shifts, datetime(2026, 11, 28, 9, 0)) is None  # nobody covers Saturday here


def test_weekday_names() -> None:
    assert parse_weekday("Monday") == 0 and parse_weekday("sun") == 6
    with pytest.raises(ValueError):
        parse_weekday("funday")


def test_stray_intraventricular_voxels_are_not_new_ivh() -> None:
    """Below IVH_PRESENT_MIN_ML (0.1 mL) intraventricular blood is not 'present': a few
    stray voxels of a learned masker do not make a follow-up 'new IVH'."""
    stray = observe_change(reading(20.0, ivh=0.0), reading(21.0, 24, ivh=0.05), RULES)
    assert stray.revised_expansion is False
    assert not any("intraventricular" in r for r in stray.reasons)
    real = observe_change(reading(20.0, ivh=0.05), reading(21.0, 24, ivh=0.4), RULES)
    assert real.revised_expansion is True
