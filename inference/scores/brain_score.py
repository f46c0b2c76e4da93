"""The BRAIN score for hematoma expansion (Wang et al., Stroke 2015)."""

from __future__ import annotations

from domain.brain_score import BrainScore

# Published risk of expansion by total points. Only the endpoints are verified against
# the paper itself (abstract, PubMed 25503550: "3.4% for 0 point to 85.8% for 24
# points"). The per-point table in the paper could not be checked here, so other totals
# carry no published risk rather than an unverified one.
PUBLISHED_RISK: dict[int, float] = {0: 0.034, 24: 0.858}
RISK_NOTE = ("published risk verified only at 0 points (3.4 %) and 24 points (85.8 %); "
             "intermediate values of the paper's table not verified, so not reported")
WARFARIN_NOTE = ("anticoagulation scored from any anticoagulant at onset; the published "
                 "item is warfarin")


def volume_points(volume_ml: float) -> int:
    """<= 10 mL: 0; > 10 to 20 mL: 5; > 20 mL: 7."""
    if volume_ml <= 10:
        return 0
    return 5 if volume_ml <= 20 else 7


def hours_points(hours_onset_to_ct: float) -> int:
    """<= 1 h: 5; 1-2: 4; 2-3: 3; 3-4: 2; 4-5: 1; > 5: 0 (upper bounds inclusive)."""
    if hours_onset_to_ct < 0:
        raise ValueError(f"hours from onset to CT cannot be negative: {hours_onset_to_ct}")
    for bound, points in ((1, 5), (2, 4), (3, 3), (4, 2), (5, 1)):
        if hours_onset_to_ct <= bound:
            return points
    return 0


def compute_brain_score(
    volume_ml: float | None,
    recurrent_ich: bool | None,
    anticoagulation: bool | None,
    intraventricular_extension: bool | None,
    hours_onset_to_ct: float | None,
) -> BrainScore:
    """BRAIN score from baseline volume, recurrent ICH, anticoagulation (warfarin),
    intraventricular extension and hours from onset to baseline CT.

    Returns
    -------
    BrainScore
        ``points`` and ``published_risk`` are None when any component is unknown.
    """
    components: dict[str, int] = {}
    missing: list[str] = []
    items: tuple[tuple[str, object, object], ...] = (
        ("baseline_volume", volume_ml, lambda v: volume_points(float(v))),
        ("recurrent_ich", recurrent_ich, lambda v: 4 if v else 0),
        ("anticoagulation", anticoagulation, lambda v: 6 if v else 0),
        ("intraventricular_extension", intraventricular_extension, lambda v: 2 if v else 0),
        ("hours_onset_to_ct", hours_onset_to_ct, lambda v: hours_points(float(v))),
    )
    for name, value, rule in items:
        if value is None:
            missing.append(name)
        else:
            components[name] = rule(value)  # type: ignore[operator]
    notes = [WARFARIN_NOTE] if "anticoagulation" in components else []
    if missing:
        return BrainScore(points=None, published_risk=None, components=components,
                          missing=tuple(missing), note="; ".join(notes))
    points = sum(components.values())
    risk = PUBLISHED_RISK.get(points)
    if risk is None:
        notes.append(RISK_NOTE)
    return BrainScore(points=points, published_risk=risk, components=components, missing=(),
                      note="; ".join(notes))
