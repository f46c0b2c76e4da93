"""Follow-up head CT: which scan follows which baseline, and what change was observed.

Pure rules, no I/O. A patient's head CTs (the node's analysed studies, merged patient
identifiers followed by the caller) are put in time order and each is given a role:

- ``baseline``: it had a hematoma (planimetry >= ``min_baseline_volume_ml``) and lies
  in no open window of an earlier baseline; its prediction waits for an outcome;
- ``followup``: the first CT in [min_hours, max_hours] after a baseline; it defines the
  baseline's observed outcome;
- ``later_followup``: a second or later CT in that window; reported (change from the
  baseline), but it does not replace the first follow-up's outcome;
- ``too_early``: within ``min_hours`` of a baseline (a repeat or an angiography of the
  same visit); not paired, and not a new baseline either;
- ``no_hematoma``: no open window and no hematoma: neither baseline nor follow-up;
- ``no_time``: the CT has no acquisition time, so no window can be decided.

A CT after a baseline's window has closed is a new baseline when it has a hematoma (a
new episode, or the first CT the node saw of an episode it missed). Roles are decided
over the whole timeline each time, so a baseline that reaches the node after its
follow-up (a late transfer) turns that follow-up into one.

The expansion rule is the shared definition (``../shared/SEEDS.md``): follow-up minus
baseline volume > 6 mL or > 33 % of baseline. The revised definition adds new or growing
intraventricular blood, and is only assessable where both masks measured it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from domain.measurements import ivh_present

# Hematoma expansion: absolute growth > 6 mL or relative growth > 33 % (SEEDS.md).
EXPANSION_ABSOLUTE_ML = 6.0
EXPANSION_RELATIVE = 0.33


def expansion_by_volume(baseline_ml: float, followup_ml: float) -> bool:
    """True when follow-up minus baseline > 6 mL or > 33 % of baseline."""
    growth = followup_ml - baseline_ml
    relative = growth / baseline_ml if baseline_ml > 0 else math.inf if growth > 0 else 0.0
    return growth > EXPANSION_ABSOLUTE_ML or relative > EXPANSION_RELATIVE


@dataclass(frozen=True)
class FollowupRules:
    """The configurable parts of pairing and labelling (``[followup]`` in config.toml)."""

    min_hours: float = 3.0
    max_hours: float = 72.0
    min_baseline_volume_ml: float = 0.5
    # A fall by more than both of these, without a procedure message, is taken as an
    # evacuation the node was not told of: not labelled.
    evacuation_drop_ml: float = 5.0
    evacuation_drop_fraction: float = 0.3
    # Intraventricular blood growing by at least this much counts as growing IVH.
    ivh_growth_ml: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_hours < self.max_hours:
            raise ValueError("the follow-up window needs 0 <= min_hours < max_hours")


class Role(str, enum.Enum):
    """What a head CT is in its patient's timeline (module docstring)."""

    BASELINE = "baseline"
    FOLLOWUP = "followup"
    LATER_FOLLOWUP = "later_followup"
    TOO_EARLY = "too_early"
    NO_HEMATOMA = "no_hematoma"
    NO_TIME = "no_time"


FOLLOWUP_ROLES = frozenset({Role.FOLLOWUP, Role.LATER_FOLLOWUP})


@dataclass(frozen=True)
class HeadCtScan:
    """One analysed head CT of a patient, as pairing reads it."""

    study_uid: str
    handle: str
    acquired_at: datetime | None
    volume_ml: float


@dataclass(frozen=True)
class Pairing:
    """The role decided for one scan, and why (no PHI: handles, hours, rules)."""

    study_uid: str
    role: Role
    baseline_study_uid: str | None
    sequence: int  # 0 for a baseline, n for its n-th follow-up, -1 otherwise
    hours_after_baseline: float | None
    reason: str


def _hours(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / 3600.0


def assign_roles(scans: Sequence[HeadCtScan], rules: FollowupRules) -> list[Pairing]:
    """The role of every scan of one patient, in time order (scans without a time last)."""
    timed = sorted((s for s in scans if s.acquired_at is not None),
                   key=lambda s: (s.acquired_at, s.study_uid))
    decided: list[Pairing] = []
    baseline: HeadCtScan | None = None
    followups = 0
    for scan in timed:
        assert scan.acquired_at is not None
        if baseline is not None:
            assert baseline.acquired_at is not None
            hours = _hours(scan.acquired_at, baseline.acquired_at)
            if hours < rules.min_hours:
                decided.append(Pairing(scan.study_uid, Role.TOO_EARLY, baseline.study_uid, -1, hours,
                                       f"{hours:.1f} h after baseline {baseline.handle}, before the window"
                                       f" opens at {rules.min_hours:g} h: not a follow-up, nor a new baseline"))
                continue
            if hours <= rules.max_hours:
                followups += 1
                role = Role.FOLLOWUP if followups == 1 else Role.LATER_FOLLOWUP
                ordinal = "first" if followups == 1 else f"follow-up number {followups}, not the first:"
                decided.append(Pairing(scan.study_uid, role, baseline.study_uid, followups, hours,
                                       f"{ordinal} CT {hours:.1f} h after baseline {baseline.handle}"
                                       f" (window {rules.min_hours:g}-{rules.max_hours:g} h)"))
                continue
            closed = (f"{hours:.1f} h after baseline {baseline.handle}, beyond the"
                      f" {rules.max_hours:g} h window; ")
        else:
            closed = "no earlier baseline of this patient at this node within the window; "
        if scan.volume_ml >= rules.min_baseline_volume_ml:
            baseline, followups = scan, 0
            decided.append(Pairing(scan.study_uid, Role.BASELINE, None, 0, None,
                                   closed + f"hematoma {scan.volume_ml:.1f} mL: a baseline"))
        else:
            baseline = None
            decided.append(Pairing(scan.study_uid, Role.NO_HEMATOMA, None, -1, None,
                                   closed + f"hematoma {scan.volume_ml:.1f} mL, under the"
                                   f" {rules.min_baseline_volume_ml:g} mL of a baseline"))
    decided += [Pairing(s.study_uid, Role.NO_TIME, None, -1, None, "no acquisition time: not paired")
                for s in scans if s.acquired_at is None]
    return decided


@dataclass(frozen=True)
class VolumeReading:
    """A hematoma measured on one CT, with the method that measured it.

    ``ivh_ml`` is the intraventricular blood volume, None when the method cannot
    separate it from the rest (then the revised definition is not assessable).
    """

    volume_ml: float
    method_name: str
    method_version: str
    acquired_at: datetime
    ivh_ml: float | None = None

    @property
    def method(self) -> str:
        return f"{self.method_name} {self.method_version}"


@dataclass(frozen=True)
class Procedure:
    """A procedure the EHR reported (HL7 ADT PR1 or ORM^O01), as evacuation evidence."""

    code_system: str
    code: str
    performed_at: datetime
    source: str  # e.g. "ORM^O01 message 12"


def is_listed(procedure: Procedure, codes: Sequence[str]) -> bool:
    """True when ``procedure`` is one of ``codes``: "SYSTEM:CODE" (system as the message
    sent it, any case) or "CODE" for any coding system."""
    for entry in codes:
        system, _, code = entry.rpartition(":")
        if code.strip().upper() == procedure.code.strip().upper() and (
                not system or system.strip().upper() == procedure.code_system.strip().upper()):
            return True
    return False


Status = Literal["labelled", "not_assessable"]
Evacuation = Literal["none", "procedure", "volume_drop"]


@dataclass(frozen=True)
class ObservedChange:
    """What happened between a baseline and one follow-up CT.

    ``expansion`` is the volume rule (> 6 mL or > 33 %); ``revised_expansion`` adds new
    or growing intraventricular blood. Either is None when it cannot be assessed, and
    ``reasons`` say why, in words a clinician reads in the SR.
    """

    baseline_ml: float
    followup_ml: float
    change_ml: float
    change_relative: float | None  # None when the baseline volume is 0
    hours_between: float
    expansion: bool | None
    revised_expansion: bool | None
    evacuation: Evacuation
    reasons: tuple[str, ...]
    baseline_ivh_ml: float | None = None
    followup_ivh_ml: float | None = None

    @property
    def status(self) -> Status:
        return "labelled" if self.expansion is not None else "not_assessable"


def observe_change(baseline: VolumeReading, followup: VolumeReading, rules: FollowupRules,
                   procedures: Sequence[Procedure] = ()) -> ObservedChange:
    """The observed change from ``baseline`` to ``followup`` and its labels.

    Decisions, in order: volumes measured by different methods (or versions) are not
    compared, so nothing is labelled; a reported evacuation between the two CTs (any
    of ``procedures`` in (baseline, follow-up]) hides any growth it removed, so the
    follow-up is labelled only when it grew anyway (expansion despite the evacuation);
    a fall by more than both drop limits without such a message is read as an
    evacuation the node was not told of, and is not labelled either.
    """
    change = followup.volume_ml - baseline.volume_ml
    relative = change / baseline.volume_ml if baseline.volume_ml > 0 else None
    hours = _hours(followup.acquired_at, baseline.acquired_at)
    reasons: list[str] = []
    common: dict[str, Any] = {
        "baseline_ml": baseline.volume_ml, "followup_ml": followup.volume_ml, "change_ml": change,
        "change_relative": relative, "hours_between": hours, "baseline_ivh_ml": baseline.ivh_ml,
        "followup_ivh_ml": followup.ivh_ml}
    if baseline.method != followup.method:
        reasons.append(f"not labelled: the baseline was measured by {baseline.method} and the"
                       f" follow-up by {followup.method}; volumes of different methods are not compared")
        return ObservedChange(expansion=None, revised_expansion=None, evacuation="none",
                              reasons=tuple(reasons), **common)
    grew = expansion_by_volume(baseline.volume_ml, followup.volume_ml)
    between = [p for p in procedures if baseline.acquired_at < p.performed_at <= followup.acquired_at]
    evacuation: Evacuation = "none"
    expansion: bool | None = grew
    if between:
        evacuation = "procedure"
        first = min(between, key=lambda p: p.performed_at)
        when = f"{_hours(first.performed_at, baseline.acquired_at):.1f} h after the baseline"
        if grew:
            reasons.append(f"expansion despite a reported evacuation ({first.code_system} {first.code},"
                           f" {when}): the follow-up volume still grew by the rule")
        else:
            expansion = None
            reasons.append(f"not labelled: evacuation reported ({first.code_system} {first.code}, {when});"
                           " the operation may have removed any growth")
    elif (-change > rules.evacuation_drop_ml and baseline.volume_ml > 0
          and -change / baseline.volume_ml > rules.evacuation_drop_fraction):
        evacuation = "volume_drop"
        expansion = None
        reasons.append(f"not labelled: the volume fell by {-change:.1f} mL ({-change / baseline.volume_ml:.0%}),"
                       f" more than {rules.evacuation_drop_ml:g} mL and"
                       f" {rules.evacuation_drop_fraction:.0%}: an evacuation the node was not told of?")
    revised = _revised(expansion, baseline, followup, rules, reasons)
    return ObservedChange(expansion=expansion, revised_expansion=revised, evacuation=evacuation,
                          reasons=tuple(reasons), **common)


def _revised(expansion: bool | None, baseline: VolumeReading, followup: VolumeReading,
             rules: FollowupRules, reasons: list[str]) -> bool | None:
    """The revised definition: the volume rule, or new IVH, or IVH grown by ivh_growth_ml."""
    if expansion is None:
        return None
    if baseline.ivh_ml is None or followup.ivh_ml is None:
        if expansion:
            return True  # the volume rule alone decides it
        reasons.append(f"revised definition (new or growing intraventricular blood) not assessable:"
                       f" {followup.method} does not separate intraventricular blood")
        return None
    new_ivh = not ivh_present(baseline.ivh_ml) and bool(ivh_present(followup.ivh_ml))
    grown = followup.ivh_ml - baseline.ivh_ml >= rules.ivh_growth_ml
    if new_ivh:
        reasons.append(f"new intraventricular blood ({followup.ivh_ml:.1f} mL)")
    elif grown:
        reasons.append(f"intraventricular blood grew from {baseline.ivh_ml:.1f} to {followup.ivh_ml:.1f} mL")
    return expansion or new_ivh or grown
